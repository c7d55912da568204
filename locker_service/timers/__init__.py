"""Durable timers: deadlines stored in the database, claimed by whichever replica sees them due.

The domain packages schedule and cancel them here; `locker_service.timer_loop` runs them.
"""
