"""Running due timers: the loop that claims them and what each kind does when it falls due.

The timers themselves (kinds, scheduling, claiming) are rows kept by `locker_service.timers`,
which the domain packages write to; this package sits above the story it drives.
"""
