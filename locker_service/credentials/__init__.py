"""Credentials: the API keys and tokens merchants, kiosks and operators sign in with (ADR 0074)."""
