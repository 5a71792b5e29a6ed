"""The always-on side of the OT platform: event contract, local stack, simulator, consumers."""
