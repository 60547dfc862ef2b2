"""Outbound webhooks: the HTTP sender behind ``WebhookSender``."""
