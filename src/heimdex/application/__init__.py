"""Use cases, one module per capability. They take ports, never adapters."""
