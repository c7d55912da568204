"""Durable timers: deadlines stored in the database, claimed by whichever replica sees them due."""
