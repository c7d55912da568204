"""The locker bank board: its serial protocol, reference firmware, physics and simulator.

`hardware.protocol` is pure and is all a bridge needs; the rest (`hardware.simulator` and what
it builds on) stands in for a real board in tests, demos and docker-compose. See README.md.
"""
