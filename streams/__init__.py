"""Kafka side of the service: the Faust app, its topics, event schemas and agents."""
