"""Pickup: codes, their checking, throttling and lockout, the site kill switch."""
