"""Alerts for operators: raised with a dedupe key, acknowledged, resolved."""
