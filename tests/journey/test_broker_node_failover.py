"""A clustered broker's node killed during a journey, through real processes (issue: a fleet).

`lockerctl up` on a three-node NATS cluster (MQTT interface, JetStream, every session and
message replicated to all three; tests/support/nats_cluster.py). The bridge and the service are
both given the cluster as `mqtt://n1,n2,n3` and both sit on n1. Two orders are ready and a third
is in its disinfection cycle when n1 is killed (no goodbye). Both ends move to another node with
their sessions; the cycle's end, reported across the outage, still makes the third order ready
and its purchaser is told; everyone collects; a whole story runs after; each order has its
drop-off and its pickup opening once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.journey.story import Played, Story
from tests.journey.system import Actors, PurchaserPhones, Up, wait_until
from tests.journey.test_journey import STORY_ENV, TIME_SCALE, keep_log
from tests.support.nats_cluster import NatsCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

WAIT_S = 120.0


def test_a_broker_node_killed_mid_journey_and_every_order_completes(tmp_path: Path) -> None:
    with NatsCluster() as cluster:
        up = Up(
            tmp_path / "var",
            time_scale=TIME_SCALE,
            broker_url=cluster.url(["n1", "n2", "n3"]),
            extra_env={
                **STORY_ENV,
                # A node's death starves readings for as long as the cluster takes to give the
                # clients their sessions elsewhere: 4-7 s here, 30 s beside two CPU hogs, which
                # at 120x is an hour of story without a reading, and the food's watch rightly
                # discards the food (its own tests: test_food_safety*.py). This test is about
                # the broker: the watch's limit is put past any outage.
                "LOCKER_FOOD_UNKNOWN_LIMIT_S": str(30 * 24 * 3600),
                # Likewise her time to collect (4 h from ready: 2 min of wall time at 120x): the
                # cluster took 85 s to give the clients their sessions once, in a CI run beside
                # the other tests, and the two orders ready before the death expired a few
                # seconds before their purchasers scanned.
                "LOCKER_HOLD_LIMIT_S": str(4 * 3600 * 10),
            },
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
            first = cluster.node("n1").mqtt_address
            up.wait_for_line(f"connected to MQTT {first}")
            up.wait_for_line(f"connected to the broker at {first}")

            ready = [story.deliver(i) for i in range(2)]
            cycling, token = story.drop_off(2)  # its cycle ends while n1 is gone
            mark = len(up.lines)
            cluster.kill("n1")
            # Each end finds the next node by itself, its session there (JetStream kept it).
            up.wait_for_line("connected to MQTT ", WAIT_S, start=mark)
            up.wait_for_line("connected to the broker at ", WAIT_S, start=mark)
            moved = up.output.splitlines()[mark:]
            assert not any(f"connected to MQTT {first}" in line for line in moved)
            assert not any(f"connected to the broker at {first}" in line for line in moved)
            # The service can command the kiosk again once the cluster grants its reply
            # subscription, which it asks for again until then and meanwhile is not ready: 4-7 s
            # here, over 30 s beside two CPU hogs (a scan meanwhile is refused, unopened).
            wait_until(actors.service_ready, WAIT_S, "the service ready again")

            qr = story.told_ready(cycling, token)  # the cycle's end came through the other node
            collected: list[Played] = []
            for played, code in [*ready, (cycling, qr)]:
                story.collect(played, code)
                collected.append(played)
            collected.append(story.play(3))  # a whole story on the two nodes left

            for played in collected:
                wait_until(
                    lambda played=played: actors.order(played.order_id)["state"] == "picked_up",
                    WAIT_S,
                    f"{played.ref} picked up",
                    0.3,
                )
            openings = {
                p.ref: actors.operator_get(f"/openings?order={p.order_id}")["items"]
                for p in collected
            }
            assert actors.operator_get("/sites")[0]["kiosks"][0]["online"]
        finally:
            phones.close()
            if actors is not None:
                actors.close()
            up.kill()
            keep_log(up, "broker-node-failover")

    for ref, rows in openings.items():
        kinds = sorted(o["kind"] for o in rows)
        assert kinds == ["dropoff", "pickup"], (ref, rows)
