"""The kiosk link's plain counters, read by /metrics (`runtime.RuntimeCollector`) and by tests.

Written on the event loop only, by the parts of the link that count (connection, lanes, the
facade's routing), so a scrape reads numbers no other thread is changing.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class LinkCounters:
    """Plain counters for /metrics and tests."""

    received: dict[str, int] = field(default_factory=dict)
    dropped_malformed: int = 0
    # Telemetry sent again (`resent`) that this replica did not ask for, or stamped outside
    # what it asked for (ADR 0098).
    dropped_unasked: int = 0
    # Events of kiosks this replica does not hold (or whose lease it lost while they waited).
    dropped_not_held: int = 0
    # Events handed to the story, per kiosk: with leases, one replica per kiosk has any.
    handled_events: dict[str, int] = field(default_factory=dict)
    handler_errors: int = 0
    # Messages handed to the story again because the database could not be reached, or lend a
    # connection in time, while this replica held their kiosk.
    handler_retries: int = 0
    # Events that arrived ahead of an earlier one of their kiosk and waited for it (ADR 0066),
    # gaps whose kiosk was asked to send the missing event again, and gaps given up on (the
    # missing event never came, asked or not).
    events_held_for_order: int = 0
    event_gaps_asked: int = 0
    event_gaps_skipped: int = 0
    # Events at or below what their lane of the kiosk's record had reached when this replica
    # took the kiosk's lease: recorded already, or passed by another holder (ADR 0080).
    events_stale: int = 0
    # Asks for a kiosk's state after a take that have ended (answered or not), those the kiosk
    # answered `succeeded`, and the snapshots seen before a take handed to the story: their
    # compartment's fresh one did not come (no answer, or a report lost), an event of it came
    # first, or the kiosk was last heard offline (ADR 0093).
    state_asks: int = 0
    state_reported: int = 0
    snapshots_replayed: int = 0
    # Transactions the kiosks' snapshots were handled in: those queued together share one
    # (ADR 0095), so a kiosk's report of twelve compartments is usually one.
    snapshot_transactions: int = 0
    commands_sent: int = 0
    connects: int = 0
