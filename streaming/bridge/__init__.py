"""Doors into `sensor-readings` for machines that do not speak Kafka: the MQTT bridge."""
