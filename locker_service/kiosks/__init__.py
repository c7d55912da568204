"""Kiosks: their screen's API, their state as reported over MQTT, and the story's reactions."""
