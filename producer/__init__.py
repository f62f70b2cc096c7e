"""The producer: replays hourly counts from a CSV into Kafka."""
