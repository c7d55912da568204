"""Operators: dashboards' views and actions, scoped to sites."""
