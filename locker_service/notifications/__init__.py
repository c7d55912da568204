"""Purchaser notifications: the outbox worker, Apprise delivery, the QR image, the message text."""
