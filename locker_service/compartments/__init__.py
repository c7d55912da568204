"""Compartments of a kiosk: allocation, lifecycle, live state from the kiosk's snapshots."""
