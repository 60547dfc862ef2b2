"""Metrics adapters: Prometheus exposition and measuring decorators around media ports."""
