"""Assets by domain; each module holds the domain's assets with their checks."""
