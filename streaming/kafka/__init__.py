"""Kafka clients: their settings (`config`), the consumer runtime that drives a sink (`runtime`),
the confirmed producer (`producer`) and what every long-running consumer shares (`lifecycle`)."""
