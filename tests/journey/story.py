"""The whole story for many orders at once, played by the people around the locker.

Each order: the merchant orders; a courier drops it off at a kiosk (only the compartment the
kiosk names opens); he puts the food in and shuts the door; the food is held hot and disinfected;
the purchaser's phone gets the message with the QR code; she scans it at that kiosk (only her
compartment opens), takes the food and shuts the door. A monitor reads the true food temperature
of every compartment from the simulator's physics the whole time.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import zxingcpp
from PIL import Image

from tests.journey.system import Actors, PurchaserPhones, token_of, wait_until

HOLD_FLOOR_C = 60.0  # food-safety floor of hot holding (docs/contracts/README.md)
FOOD_IN_C = 70.0  # the kitchen hands over hot food
HUMAN_PAUSE_S = 0.4  # a hand moves slower than two board polls (100-200 ms each)
UNLOCK_WAIT_S = 20.0
MESSAGE_WAIT_S = 120.0  # disinfection (30 min nominal) at the test's time scale, plus margin
PICKED_UP_WAIT_S = 60.0
MONITOR_PERIOD_S = 0.25


@dataclass
class Played:
    ref: str
    kiosk: int
    compartment: int = 0
    order_id: str = ""
    deposited_at: float = 0.0
    scanned_at: float = 0.0
    message_title: str = ""
    messages: int = 0


@dataclass
class TemperatureMonitor:
    """Samples the simulator's true food temperature of every compartment."""

    actors: Actors
    kiosks: int
    # (kiosk, compartment) -> (wall time, simulator time, true food temperature, occupied)
    samples: dict[tuple[int, int], list[tuple[float, float, float, bool]]] = field(
        default_factory=dict
    )
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for k in range(self.kiosks):
                try:
                    truth = self.actors.truth(k)
                except Exception:  # a busy moment; the next sample comes soon
                    continue
                now = time.monotonic()
                sim_s = float(truth["sim_time_s"])
                for c in truth["compartments"]:
                    self.samples.setdefault((k, c["number"]), []).append(
                        (now, sim_s, c["food_temp_c"], c["occupied"])
                    )
            self._stop.wait(MONITOR_PERIOD_S)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def held(self, played: Played) -> list[tuple[float, float]]:
        """(simulator time, true food temperature) while this order's food sat in its
        compartment (picked by wall time, the clock the story's hands keep)."""
        return [
            (sim_s, temp)
            for t, sim_s, temp, occupied in self.samples.get((played.kiosk, played.compartment), [])
            if played.deposited_at <= t <= played.scanned_at and occupied
        ]


def nominal_s_below(samples: list[tuple[float, float]], floor_c: float) -> float:
    """How long (nominal seconds) the food was below `floor_c`, from consecutive samples.

    Measured on the simulator's own clock: a starved test process samples late, and wall time
    times the scale would count that delay as time the food spent cold."""
    below = 0.0
    for (t0, temp0), (t1, _temp1) in itertools.pairwise(samples):
        if temp0 < floor_c:
            below += t1 - t0
    return below


def decode_qr(png: bytes) -> str:
    import io

    results = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert results, "no QR code in the attachment"
    return str(results[0].text)


class Story:
    def __init__(self, actors: Actors, phones: PurchaserPhones, kiosks: int) -> None:
        self.actors = actors
        self.phones = phones
        self.kiosks = kiosks
        # Unlocks at one kiosk are checked one at a time, so "only this lock moved" is exact.
        self.kiosk_locks = [threading.Lock() for _ in range(kiosks)]

    def _pulses(self, k: int) -> dict[int, int]:
        return {c["number"]: c["lock_pulses"] for c in self.actors.truth(k)["compartments"]}

    def _opens_only_this(self, k: int, n_of: Any) -> int:
        """Run `n_of()` (which makes the system unlock and names the compartment) while a hand
        waits at the bank and opens the first door whose lock pulses, as a person opens the door
        that clicks without waiting for the screen to say which. Then check that it was the
        compartment named and that no other lock at the kiosk pulsed."""
        with self.kiosk_locks[k], ThreadPoolExecutor(1) as pool:
            before = self._pulses(k)
            named = pool.submit(n_of)

            def pulsed() -> list[int]:
                if named.done() and named.exception() is not None:
                    named.result()  # the system refused: raise its error here
                now = self._pulses(k)
                return [m for m in now if now[m] > before[m]]

            # The pulse count only grows, so a busy machine cannot miss it. A released latch
            # springs back (after SIM_RELATCH_S, test_journey.STORY_ENV): the hand does not
            # wait for the screen's answer, as a person opens the door that clicks.
            opened = wait_until(pulsed, UNLOCK_WAIT_S, f"a lock of kiosk {k} to pulse", 0.02)[0]
            pulsed_at = time.monotonic()
            try:
                self.actors.hands(k, "open", opened)  # only a released latch lets the door open
            except AssertionError as exc:
                late_s = time.monotonic() - pulsed_at
                raise AssertionError(f"{exc} ({late_s:.2f} s after the pulse)") from exc
            n = int(named.result(timeout=UNLOCK_WAIT_S))
            after = self._pulses(k)
        assert opened == n, f"kiosk {k}: compartment {opened} opened, the system named {n}"
        moved = {m: after[m] - before[m] for m in after if after[m] != before[m]}
        assert moved == {n: 1}, f"kiosk {k}: expected only compartment {n} to pulse, got {moved}"
        return n

    def _hands(self, k: int, n: int, *steps: tuple[str, dict[str, Any]]) -> None:
        for i, (action, body) in enumerate(steps):
            if i:
                time.sleep(HUMAN_PAUSE_S)
            self.actors.hands(k, action, n, **body)

    def collect(self, played: Played, scanned: str) -> None:
        """She scans her QR at the kiosk, opens the door that clicks, takes her food, shuts."""
        k, n = played.kiosk, played.compartment

        def scan() -> int:
            played.scanned_at = time.monotonic()
            self.actors.scan(k, scanned)
            return n

        self._opens_only_this(k, scan)
        time.sleep(HUMAN_PAUSE_S)
        self._hands(k, n, ("remove", {}), ("close", {}))

    def play(self, index: int) -> Played:
        played, scanned = self.deliver(index)
        self.collect(played, scanned)
        wait_until(
            lambda: self.actors.order(played.order_id)["state"] == "picked_up",
            PICKED_UP_WAIT_S,
            f"order {played.ref} picked up",
            step_s=0.5,
        )
        played.messages = len(self.phones.inbox(played.ref))
        return played

    def deliver(self, index: int) -> tuple[Played, str]:
        """An order placed, dropped off and made ready: her message and the text of its QR."""
        played, token = self.drop_off(index)
        return played, self.told_ready(played, token)

    def drop_off(self, index: int) -> tuple[Played, str]:
        """An order placed and its food put in its compartment; its token."""
        k = index % self.kiosks
        # Per kiosk: 3 small, 6 medium, 1 large order, as a 12-compartment bank holds them.
        j = index // self.kiosks
        size = "S" if j < 3 else "M" if j < 9 else "L"
        played = Played(ref=f"journey-{index:02d}-{uuid.uuid4().hex[:6]}", kiosk=k)
        created = self.actors.create_order(played.ref, self.phones.contact(played.ref), size)
        played.order_id = created["id"]
        token = token_of(created["purchaser_url"])

        played.compartment = n = self._opens_only_this(
            k, lambda: self.actors.dropoff(k, played.ref)["compartment"]
        )
        time.sleep(HUMAN_PAUSE_S)
        self._hands(k, n, ("place", {"mass_g": 450, "temp_c": FOOD_IN_C}), ("close", {}))
        played.deposited_at = time.monotonic()
        return played, token

    def told_ready(self, played: Played, token: str) -> str:
        """Her message that the food is ready; the text of its QR code."""
        n = played.compartment
        inbox = wait_until(
            lambda: self.phones.inbox(played.ref), MESSAGE_WAIT_S, f"message for {played.ref}"
        )
        message = inbox[0]
        played.message_title = message.title
        assert f"compartment {n}" in message.body, message.body
        pngs = [data for name, data in message.attachments if name.endswith(".png")]
        assert pngs, f"no QR image in the message for {played.ref}"
        scanned = decode_qr(pngs[0])
        assert scanned == token, "the QR code carries another token than the purchaser's page"
        return scanned

    def play_all(self, orders: int) -> list[Played]:
        with ThreadPoolExecutor(max_workers=orders) as pool:
            futures = [pool.submit(self.play, i) for i in range(orders)]
            return [f.result() for f in futures]
