"""Notifications: what the owner wants to hear about, sent to webhooks (and as MQTT events)."""
