"""A real bridge, board simulator and broker: with the broker gone, a purchaser's QR code still
opens her compartment, once, and the service hears of it first when the link is back
(docs/adr/0077)."""

from __future__ import annotations

import secrets
import threading
from typing import Any

from firmware_bridge.offline import Opened, Refused
from hardware.protocol import FaultCode
from tests.firmware_bridge.conftest import HER_CODE, Kiosk, offline_supply
from tests.firmware_bridge.harness import Observer, pulses


def test_cut_off_a_scanned_token_opens_its_compartment_once_and_is_journalled_first(
    durable_kiosk: Kiosk,
) -> None:
    bridge, broker, sim = durable_kiosk.bridge, durable_kiosk.broker, durable_kiosk.sim
    obs = Observer(broker.host, broker.port, durable_kiosk.settings.kiosk_id, persistent=True)
    obs.start()
    outcomes: list[dict[str, Any]] = []
    told = threading.Condition()

    def screen(outcome: dict[str, Any]) -> None:
        with told:
            outcomes.append(outcome)
            told.notify_all()

    bridge.offline_listeners.append(screen)
    try:
        sim.world.open_door(2, force=True)  # her food, put in by the courier
        sim.world.place_item(2)
        sim.world.close_door(2)
        obs.wait(lambda: obs.events("door_closed", 2), "the drop-off reported")
        hers, theirs = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        supply = offline_supply(
            [("ord-hers", 2, hers, "12345678"), ("ord-theirs", 7, theirs, "87654321")]
        )
        # A malformed supply is dropped and changes nothing.
        obs.client.publish(obs.topics.offline, b'{"supply_id": "bad", "refresh_s": -1}')
        obs.client.publish(obs.topics.offline, supply.to_json())
        obs.wait(lambda: bridge.offline.knows_codes, "the bridge to take the supply")
        assert not bridge.cut_off()
        sim.world.scan(f"https://lockers.example/p/{hers}")
        # In touch: the scan goes to the service as ever, nothing opens here.
        obs.wait(lambda: obs.events("scan"), "the scan sent to the service")
        assert pulses(sim, 2) == 0

        before = {e["event_id"] for e in obs.events()}
        broker.stop()
        obs.wait(lambda: not bridge.link.connected.is_set(), "the bridge to see the outage")
        assert bridge.cut_off()
        sim.world.scan(f"https://lockers.example/p/{hers}")
        obs.wait(lambda: pulses(sim, 2) == 1, "her compartment unlocked", timeout_s=30)
        # Her hand opens the door that clicked at once: a released latch springs back after
        # 60 nominal seconds, 3 s at this time scale, which a starved test could miss.
        sim.world.open_door(2)
        sim.world.remove_item(2)
        sim.world.close_door(2)
        with told:
            told.wait_for(lambda: any(o.get("ok") for o in outcomes), timeout=30)
        assert {"ok": True, "compartment": 2, "offline": True} in outcomes
        sim.world.scan(hers)  # again: refused, nothing opens
        with told:
            told.wait_for(lambda: any(o.get("error") for o in outcomes), timeout=30)
        refused = [o for o in outcomes if not o["ok"]]
        assert refused[0]["error"] == "code_used"
        assert pulses(sim, 2) == 1
        assert all(pulses(sim, n) == 0 for n in range(1, 13) if n != 2)
        obs.wait(lambda: bridge.store.event_count() >= 4, "the pickup and the door journalled")

        broker.start()
        seen: dict[str, dict[str, Any]] = {}

        def after_outage() -> list[str]:
            for event in obs.events(n=2):  # at least once: a restarted broker may repeat one
                if event["event_id"] not in before:
                    seen.setdefault(event["event_id"], event)
            return [e["type"] for e in seen.values()]

        obs.wait(lambda: "door_closed" in after_outage(), "the door events after the outage", 40)
        kinds = after_outage()
        assert kinds == ["offline_pickup", "door_opened", "item_removed", "door_closed"], kinds
        pickup = next(iter(seen.values()))
        assert pickup["data"]["order_id"] == "ord-hers"
        assert pickup["data"]["method"] == "qr"
        assert pickup["data"]["request_id"].startswith("offline-")
        # The second scan was decided here too: no scan event since the outage carries her
        # token to anyone (by id: the restarted broker may give the one before it again).
        after = [e for e in obs.events("scan") if e["event_id"] not in before]
        assert all(hers not in e["data"]["text"] for e in after), after
    finally:
        bridge.offline_listeners.remove(screen)
        obs.stop()


def test_with_the_broker_there_but_no_supply_a_token_not_listed_goes_to_the_service(
    kiosk: Kiosk,
) -> None:
    """Supplies stopped (the service's loop, or a replica not holding the kiosk) while the broker
    is up: what the last list holds is decided here, anything newer is left to the service."""
    bridge, obs, sim = kiosk.bridge, kiosk.observer, kiosk.sim
    hers, newer = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    supply = offline_supply([("ord-hers", 2, hers, "12345678")], refresh_s=0.5)
    obs.client.publish(obs.topics.offline, supply.to_json())
    obs.wait(lambda: bridge.knows_codes(), "the bridge to take the supply")
    obs.wait(bridge.cut_off, "three supplies missed", timeout_s=30)
    assert bridge.link.connected.is_set()
    sim.world.scan(newer)
    obs.wait(lambda: any(e["data"]["text"] == newer for e in obs.events("scan")), "the scan")
    sim.world.scan(hers)
    obs.wait(lambda: pulses(sim, 2) == 1, "her compartment unlocked", timeout_s=30)
    assert all(pulses(sim, n) == 0 for n in range(1, 13) if n != 2)
    assert not any(e["data"]["text"] == hers for e in obs.events("scan"))


def test_an_unlock_the_board_refuses_gives_the_code_back_and_is_journalled(
    durable_kiosk: Kiosk,
) -> None:
    """A cycle is running in her compartment: the board refuses to unlock it."""
    bridge, broker, sim = durable_kiosk.bridge, durable_kiosk.broker, durable_kiosk.sim
    obs = Observer(broker.host, broker.port, durable_kiosk.settings.kiosk_id, persistent=True)
    obs.start()
    outcomes: list[dict[str, Any]] = []
    bridge.offline_listeners.append(outcomes.append)
    try:
        started = obs.final_reply(
            obs.command("start_disinfection", 2, {"duration_s": 1800}).request_id
        )
        assert started["status"] == "succeeded"
        hers = secrets.token_urlsafe(32)
        supply = offline_supply([("ord-hers", 2, hers, "12345678")])
        obs.client.publish(obs.topics.offline, supply.to_json())
        obs.wait(lambda: bridge.knows_codes(), "the bridge to take the supply")
        broker.stop()
        obs.wait(bridge.cut_off, "the bridge to see the outage")
        sim.world.scan(hers)
        obs.wait(lambda: any(not o["ok"] for o in outcomes), "the screen told", timeout_s=30)
        assert outcomes[-1]["error"] == "kiosk_unreachable"
        assert pulses(sim, 2) == 0
        # Hers again on the kiosk: once the cycle is over she may scan again.
        assert bridge.offline.decide_token(hers) == Opened("ord-hers", 2, "qr")

        broker.start()
        obs.wait(lambda: obs.events("offline_pickup_failed", 2), "the refusal journalled", 40)
        [failed] = {e["event_id"]: e for e in obs.events("offline_pickup_failed", 2)}.values()
        [pickup] = {e["event_id"]: e for e in obs.events("offline_pickup", 2)}.values()
        assert failed["seq"] > pickup["seq"]
        assert failed["data"]["request_id"] == pickup["data"]["request_id"]
        assert failed["data"]["order_id"] == "ord-hers"
        assert failed["data"]["status"] in ("failed", "rejected")
    finally:
        bridge.offline_listeners.remove(outcomes.append)
        obs.stop()


def test_cut_off_her_code_opens_nothing_behind_a_fault_the_board_latched(kiosk: Kiosk) -> None:
    """As the service refuses it: her message said not to collect the food (a probe fault).
    The kiosk sees the fault on its own board, whatever its last supply listed."""
    bridge, obs, sim = kiosk.bridge, kiosk.observer, kiosk.sim
    hers, theirs = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    supply = offline_supply(
        [("ord-hers", 2, hers, HER_CODE), ("ord-theirs", 7, theirs, "87654321")], refresh_s=0.5
    )
    obs.client.publish(obs.topics.offline, supply.to_json())
    obs.wait(lambda: bridge.knows_codes(), "the bridge to take the supply")
    sim.faults.sensor(2, "open")
    obs.wait(lambda: obs.events("fault_raised", 2), "the probe fault latched")
    assert bridge.tracker.views[2].fault == FaultCode.SENSOR_OPEN
    obs.wait(bridge.cut_off, "three supplies missed", timeout_s=30)
    for decision in (bridge.pickup_offline(token=hers), bridge.pickup_offline(code=HER_CODE)):
        assert isinstance(decision, Refused) and decision.error == "compartment_fault"
    assert isinstance(bridge.pickup_offline(token=theirs), Opened)  # another compartment
    obs.wait(lambda: pulses(sim, 7) == 1, "their compartment unlocked")
    restarted_board_still_holds_her_food(kiosk, hers)
    assert not obs.events("offline_pickup", 2) and not obs.events("offline_code_refused")


def restarted_board_still_holds_her_food(kiosk: Kiosk, hers: str) -> None:
    """The board restarts, which clears its latched faults: nobody has looked at her food in
    compartment 2, and neither her QR token `hers` nor her code opens it."""
    bridge, obs, sim = kiosk.bridge, kiosk.observer, kiosk.sim
    sim.faults.sensor(2, None)
    sim.faults.reboot()
    obs.wait(lambda: obs.events("fault_cleared", 2), "the fault cleared by the restart")
    assert 2 not in bridge.tracker.held_by_faults()
    for decision in (bridge.pickup_offline(token=hers), bridge.pickup_offline(code=HER_CODE)):
        assert isinstance(decision, Refused) and decision.error == "compartment_fault"
    assert pulses(sim, 2) == 0


def test_cut_off_her_code_opens_nothing_behind_a_fault_seen_before_her_order_was_listed(
    kiosk: Kiosk,
) -> None:
    """Her food was ready and the first supply listing it on its way when the probe fault
    latched: that supply, made before the service heard of the fault, lists her order unheld.
    The board then restarts while the kiosk is cut off, which clears the fault."""
    bridge, obs, sim = kiosk.bridge, kiosk.observer, kiosk.sim
    hers, theirs = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    first = offline_supply([("ord-theirs", 7, theirs, "87654321")], refresh_s=0.5)
    obs.client.publish(obs.topics.offline, first.to_json())
    obs.wait(lambda: bridge.knows_codes(), "the bridge to take the first supply")
    sim.faults.sensor(2, "open")
    obs.wait(lambda: obs.events("fault_raised", 2), "the probe fault latched")
    # Someone opens the door with the fault latched: what is inside went through it still.
    sim.world.open_door(2, force=True)
    sim.world.close_door(2)
    obs.wait(lambda: obs.events("door_closed", 2), "the door opened and shut")
    listing = offline_supply(
        [("ord-hers", 2, hers, HER_CODE), ("ord-theirs", 7, theirs, "87654321")], refresh_s=0.5
    )
    obs.client.publish(obs.topics.offline, listing.to_json())
    obs.wait(
        lambda: any(r.order_id == "ord-hers" for r in bridge.store.offline_orders()),
        "the supply listing her order taken",
    )
    obs.wait(bridge.cut_off, "three supplies missed", timeout_s=30)
    restarted_board_still_holds_her_food(kiosk, hers)
    assert isinstance(bridge.pickup_offline(token=theirs), Opened)  # another compartment


def test_a_wrong_code_typed_while_cut_off_is_journalled_for_the_service(kiosk: Kiosk) -> None:
    """The keypad throttles wrong codes itself; the service hears of each (never its digits),
    so guessing offline spends the kiosk's daily budget there too."""
    bridge, obs = kiosk.bridge, kiosk.observer
    supply = offline_supply([("ord-hers", 2, secrets.token_urlsafe(32), "12345678")], refresh_s=0.5)
    obs.client.publish(obs.topics.offline, supply.to_json())
    obs.wait(lambda: bridge.knows_codes(), "the bridge to take the supply")
    obs.wait(bridge.cut_off, "three supplies missed", timeout_s=30)
    refused = bridge.pickup_offline(code="00000000")
    assert isinstance(refused, Refused) and refused.error == "invalid_code"
    obs.wait(lambda: obs.events("offline_code_refused"), "the wrong code journalled")
    [event] = obs.events("offline_code_refused")
    assert event["compartment"] is None and event["data"] == {}
    assert isinstance(bridge.pickup_offline(code="12345678"), Opened)  # hers: not refused
    obs.wait(lambda: obs.events("offline_pickup", 2), "her pickup journalled")
    assert len(obs.events("offline_code_refused")) == 1
