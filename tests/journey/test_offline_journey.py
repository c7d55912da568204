"""Pickups go on while the kiosk is cut off (ADR 0077), through real processes: `lockerctl up` on
Mosquitto and PostgreSQL at 120x, first with the broker stopped, then with the service frozen
(SIGSTOP), each for ten minutes of the system's time in the middle of the story.

In each outage one purchaser collects by her QR code at the scanner and another by typing her
code on the bridge's offline screen; only her compartment opens; her QR again opens nothing. A
third, ready before the outage, collects online afterwards. A fourth's food went in just before
the outage, and its cycle ends while the kiosk is cut off: she is told it is ready once the link
is back, and collects then. Then every order is picked up once,
each pickup has one opening (audited as offline where it was), the kiosk's events are stored
once each, and its temperature record has readings from inside both outages, none twice.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import running_broker
from tests.journey.story import HUMAN_PAUSE_S, Played, Story
from tests.journey.system import Actors, PurchaserPhones, Up, wait_until
from tests.journey.test_fault_campaign import Fault
from tests.journey.test_journey import STORY_ENV, TIME_SCALE, keep_log
from tests.stack.pgdb import pg_database
from tests.support.mosquitto import MosquittoProcess, durable_mosquitto

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

OUTAGE_S = 600 / TIME_SCALE  # ten minutes of the system's time
ENV = {**STORY_ENV, "LOCKER_OFFLINE_SUPPLY_REFRESH_S": "1"}  # cut off 5 s after the last supply
WAIT_S = 120.0
CODE_IN_MESSAGE = re.compile(r"Pickup code: (\d{4}) (\d{4})")


class Purchaser:
    def __init__(self, played: Played, qr: str, code: str) -> None:
        self.played, self.qr, self.code = played, qr, code


class OfflineStory:
    def __init__(self, up: Up, broker: MosquittoProcess) -> None:
        self.up, self.broker = up, broker
        self.actors = Actors(up)
        self.phones = PurchaserPhones()
        self.story = Story(self.actors, self.phones, 1)
        port = re.search(r"offline_screen=http://127\.0\.0\.1:(\d+)", up.output)
        assert port, "lockerctl up printed no offline screen"
        base = f"http://127.0.0.1:{port.group(1)}"
        # Typed on the screen's own page: the browser names that page's origin.
        self.screen = httpx.Client(base_url=base, timeout=20, headers={"Origin": base})
        self.windows: list[tuple[float, float]] = []  # each outage, in wall-clock epoch seconds
        self.purchasers: list[Purchaser] = []

    def drop_off_late(self) -> tuple[Played, str]:
        """Food put in just before the outage: its cycle runs (and ends) while cut off."""
        played, token = self.story.drop_off(len(self.purchasers))
        n = played.compartment
        wait_until(lambda: self.truth(n)["uv_on"], WAIT_S, "its cycle started", 0.1)
        return played, token

    def truth(self, n: int) -> dict[str, Any]:
        return self.actors.compartment(0, n)

    def deliver(self, count: int) -> list[Purchaser]:
        first = len(self.purchasers)
        with ThreadPoolExecutor(count) as pool:
            delivered = list(pool.map(self.story.deliver, range(first, first + count)))
        for played, qr in delivered:
            code = CODE_IN_MESSAGE.search(self.phones.inbox(played.ref)[0].body)
            assert code, self.phones.inbox(played.ref)[0].body
            self.purchasers.append(Purchaser(played, qr, code.group(1) + code.group(2)))
        return self.purchasers[first:]

    def state(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.screen.get("/state").json()
        return answer

    def outcomes(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self.screen.get("/outcomes?after=0").json()["outcomes"]
        return answer

    def collect(self, p: Purchaser, how: str) -> None:
        """She opens her compartment (and only hers), takes her food and shuts the door."""
        n = p.played.compartment

        def by_qr() -> int:
            self.actors.scan(0, p.qr)
            return n

        def by_code() -> int:
            answer = self.screen.post("/pickup", json={"code": p.code})
            assert answer.status_code == 202, answer.text
            return int(answer.json()["compartment"])

        self.story._opens_only_this(0, by_qr if how == "qr" else by_code)
        time.sleep(HUMAN_PAUSE_S)
        self.story._hands(0, n, ("remove", {}), ("close", {}))

    def pulses(self) -> dict[int, int]:
        return self.story._pulses(0)

    def outage(self, what: str, ready: list[Purchaser]) -> None:
        """Cut the kiosk off, two of them collect, the first tries her used QR again, a cycle
        ends; then restore, and everyone else collects."""
        wait_until(lambda: self.state()["ready"] == len(ready), WAIT_S, "the kiosk supplied")
        late, late_token = self.drop_off_late()
        started = time.time()
        service_pid = Fault(self.up).child_pid("-m locker_service serve")
        if what == "broker":
            self.broker.stop()
        else:
            os.kill(service_pid, signal.SIGSTOP)
        try:
            wait_until(lambda: self.state()["offline"], WAIT_S, "the kiosk cut off", 0.2)
            self.collect(ready[0], "qr")
            self.collect(ready[1], "code")
            before = self.pulses()
            seen = len(self.outcomes())
            self.actors.scan(0, ready[0].qr)  # her QR again, while still cut off
            wait_until(lambda: len(self.outcomes()) > seen, WAIT_S, "the second scan decided")
            assert self.outcomes()[-1]["error"] == "code_used"
            assert self.pulses() == before
            wait_until(lambda: time.time() - started >= OUTAGE_S, OUTAGE_S + 5, "the outage")
            late_n = late.compartment
            wait_until(
                lambda: not self.truth(late_n)["uv_on"], WAIT_S, "the cycle ended while cut off"
            )
            assert not self.phones.inbox(late.ref), "told ready while the service could not know"
        finally:
            if what == "broker":
                self.broker.start()
            else:
                os.kill(service_pid, signal.SIGCONT)
        self.windows.append((started, time.time()))
        restored = time.monotonic()
        wait_until(lambda: not self.state()["offline"], WAIT_S, "the kiosk back in touch", 0.2)
        for p in ready[:2]:
            wait_until(
                lambda p=p: self.actors.order(p.played.order_id)["state"] == "picked_up",
                WAIT_S,
                f"{p.played.ref} picked up once the service heard",
                0.3,
            )
        # Online again: her QR opens nothing; the third purchaser collects as usual.
        before = self.pulses()
        self.actors.scan(0, ready[0].qr)
        self.collect(ready[2], "qr")
        assert {n: c - before[n] for n, c in self.pulses().items() if c != before[n]} == {
            ready[2].played.compartment: 1
        }
        wait_until(
            lambda: self.actors.order(ready[2].played.order_id)["state"] == "picked_up",
            WAIT_S,
            f"{ready[2].played.ref} picked up",
            0.3,
        )
        # The cycle that ended while cut off: ready once the service heard, and she is told.
        qr = self.story.told_ready(late, late_token)
        assert self.phones.inbox(late.ref)[0].received_at > restored
        self.purchasers.append(Purchaser(late, qr, ""))
        self.collect(self.purchasers[-1], "qr")
        wait_until(
            lambda: self.actors.order(late.order_id)["state"] == "picked_up",
            WAIT_S,
            f"{late.ref} picked up",
            0.3,
        )

    def openings_of(self, order_id: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.actors.operator_get(f"/openings?order={order_id}")[
            "items"
        ]
        return rows

    def close(self) -> None:
        self.screen.close()
        self.phones.close()
        self.actors.close()


async def _record(database_url: str, windows: list[tuple[float, float]]) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        events = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT event_id) AS distinct_n FROM kiosk_events"
        )
        twice = await conn.fetch(
            "SELECT kiosk_id, number, ts FROM temperature_readings"
            " GROUP BY kiosk_id, number, ts HAVING count(*) > 1"
        )
        inside = [
            await conn.fetchval(
                "SELECT count(*) FROM temperature_readings"
                " WHERE ts > to_timestamp($1) AND ts < to_timestamp($2) AND temp_c IS NOT NULL",
                start,
                end,
            )
            for start, end in windows
        ]
        kept = await conn.fetchval("SELECT count(*) FROM temperature_backlog_buckets")
        return {"events": events, "twice": twice, "inside": inside, "kept": kept}
    finally:
        await conn.close()


def test_pickups_go_on_with_the_broker_and_then_the_service_stopped(tmp_path: Path) -> None:
    # The service's session and its queue survive the broker's restart, as on a production
    # broker with persistence (docs/deploy/mosquitto).
    with (
        running_broker(durable_mosquitto(tmp_path / "broker")) as broker,
        pg_database() as database_url,
    ):
        up = Up(
            tmp_path / "var",
            time_scale=TIME_SCALE,
            broker_url=broker.url,
            database_url=database_url,
            extra_env=ENV,
        )
        story = None
        try:
            up.wait_ready()
            story = OfflineStory(up, broker)
            wait_until(
                lambda: (
                    story is not None
                    and story.actors.operator_get("/sites")[0]["kiosks"][0]["online"]
                ),
                WAIT_S,
                "the kiosk online",
            )
            for what in ("broker", "service"):
                story.outage(what, story.deliver(3))
            purchasers = story.purchasers
            record = asyncio.run(_record(database_url, story.windows))
            openings = {p.played.ref: story.openings_of(p.played.order_id) for p in purchasers}
        finally:
            if story is not None:
                story.close()
            up.kill()
            keep_log(up, "offline")

    for i, p in enumerate(purchasers):
        pickups = [o for o in openings[p.played.ref] if o["kind"] == "pickup"]
        expected = ["qr_offline", "keypad_offline", "qr", "qr"][i % 4]
        assert [o["how"] for o in pickups] == [expected], (p.played.ref, pickups)
        assert pickups[0]["compartment"] == p.played.compartment
        assert pickups[0]["door_opened_at"] is not None
    assert record["events"]["n"] == record["events"]["distinct_n"]
    assert record["twice"] == []
    assert all(n > 0 for n in record["inside"]), record["inside"]
    assert record["kept"] > 0
