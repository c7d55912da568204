"""Compartment temperatures: batched ingest from the kiosk link, history, hot-holding alerts."""
