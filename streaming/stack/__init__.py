"""Local services without Docker: Kafka (KRaft from Maven jars), Redis, PostgreSQL."""
