"""Factory fleet simulator: physics-based readings with deliberately injected, published faults.

`generate()` is the pure entry point (no Kafka); `ot simulate` streams the same messages to Kafka.
"""

from streaming.simulator.generator import SimulatedData, generate

__all__ = ["SimulatedData", "generate"]
