"""Courier drop-off: identify the courier and the order, allocate a compartment, open it."""
