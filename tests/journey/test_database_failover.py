"""PostgreSQL failover during a journey, through real processes (issue: a fleet's database).

`lockerctl up` on Mosquitto and a primary PostgreSQL with a synchronous streaming standby of its
own, the service given both hosts (`target_session_attrs=read-write`). Orders are ready and a
merchant keeps creating orders; the primary is killed (no shutdown) and the standby promoted.
The service carries on against the new primary by itself: every order the merchant was told
was created is there, every ready purchaser collects, and a new order goes through the whole
story after the failover, each with its openings recorded once.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import unavailable
from tests.journey.story import Story
from tests.journey.system import Actors, PurchaserPhones, Up, wait_until
from tests.journey.test_journey import STORY_ENV, TIME_SCALE, keep_log
from tests.support.mosquitto import MosquittoProcess
from tests.support.pg_pair import PostgresPair

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

WAIT_S = 120.0


class Merchant(threading.Thread):
    """Creates an order every 50 ms and remembers those it was told were created (201)."""

    def __init__(self, actors: Actors) -> None:
        super().__init__(daemon=True)
        self.actors = actors
        self.acknowledged: list[tuple[str, float]] = []  # order id, when (monotonic)
        self.refused: list[int] = []  # the statuses of creates not acknowledged
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.stopping.is_set():
                ref = f"fo-{uuid.uuid4().hex[:10]}"
                try:
                    r = http.post(
                        f"{self.actors.up.base_url}/api/v1/orders",
                        json={
                            "external_ref": ref,
                            "site": self.actors.creds["site_code"],
                            "purchaser_name": "Failover",
                            "purchaser_contact": "json://127.0.0.1:9/",
                            "size": "S",
                        },
                        headers={"X-API-Key": self.actors.creds["merchant_api_key"]},
                    )
                except httpx.HTTPError:
                    self.refused.append(0)  # no answer at all
                else:
                    if r.status_code == 201:
                        self.acknowledged.append((r.json()["id"], time.monotonic()))
                    else:
                        self.refused.append(r.status_code)
                time.sleep(0.05)


def test_the_primary_killed_and_the_standby_promoted_mid_journey(tmp_path: Path) -> None:
    try:
        broker = MosquittoProcess().start()
    except RuntimeError as exc:
        unavailable(str(exc))
        raise
    pair = PostgresPair()
    try:
        pair.start()
        up = Up(
            tmp_path / "var",
            time_scale=TIME_SCALE,
            broker_url=broker.url,
            database_url=pair.url,
            extra_env=STORY_ENV,
        )
        phones = PurchaserPhones()
        actors = None
        try:
            up.wait_ready()
            actors = Actors(up)
            story = Story(actors, phones, 1)
            wait_until(
                lambda: actors.operator_get("/sites")[0]["kiosks"][0]["online"],
                WAIT_S,
                "the kiosk online",
            )
            ready = [story.deliver(i) for i in range(2)]
            merchant = Merchant(actors)
            merchant.start()
            wait_until(lambda: len(merchant.acknowledged) >= 5, WAIT_S, "orders being created")
            pair.kill_primary()
            time.sleep(1.0)  # the operator takes a moment to promote
            pair.promote_standby()
            promoted = time.monotonic()
            wait_until(
                lambda: merchant.acknowledged and merchant.acknowledged[-1][1] > promoted,
                WAIT_S,
                "orders created on the new primary",
            )
            merchant.stopping.set()
            merchant.join(20)

            for played, qr in ready:  # the purchasers collect on the new primary
                story.collect(played, qr)
            after = story.play(2)  # a whole story after the failover

            for played in [p for p, _ in ready] + [after]:
                wait_until(
                    lambda played=played: actors.order(played.order_id)["state"] == "picked_up",
                    WAIT_S,
                    f"{played.ref} picked up",
                    0.3,
                )
            lost = [
                o
                for o, _ in merchant.acknowledged
                if actors.http.get(
                    f"{up.base_url}/api/v1/orders/{o}",
                    headers={"X-API-Key": actors.creds["merchant_api_key"]},
                ).status_code
                != 200
            ]
            openings = {
                p.ref: actors.operator_get(f"/openings?order={p.order_id}")["items"]
                for p in [p for p, _ in ready] + [after]
            }
        finally:
            phones.close()
            if actors is not None:
                actors.close()
            up.kill()
            keep_log(up, "database-failover")
    finally:
        pair.stop()
        broker.__exit__(None, None, None)

    assert lost == [], f"{len(lost)} acknowledged orders missing after the failover"
    # While no primary took writes, each create was told to try again (503), never a fault.
    assert set(merchant.refused) <= {503}, merchant.refused
    for ref, rows in openings.items():
        kinds = sorted(o["kind"] for o in rows)
        assert kinds == ["dropoff", "pickup"], (ref, rows)
