"""The two streaming consumers of `sensor-readings`: the Parquet lander (`ot land`) and the Redis
state writer with streaming alerts (`ot state`). Pure cores (`landing`, `live_state`, `alerting`)
sit beside thin Kafka/Redis adapters (`lander`, `state_writer`)."""
