"""A takeover's state asks, paced (ADR 0105): a few under way, the rest in the order taken,
and a kiosk that sends an event asked at once."""

from __future__ import annotations

import asyncio

from locker_service.kiosk_link.asks import Ask, StateAsks

TURN_S = 3600.0  # turns end with their asks only, but in the test of the turn's end


class Kiosks:
    """Asks that each wait until the test answers them, recording which were sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.answered: list[str] = []  # asks that ended with their answer
        self.answers: dict[str, asyncio.Event] = {}

    def ask(self, kiosk_id: str, label: str = "") -> Ask:
        async def asking() -> None:
            self.sent.append(kiosk_id + label)
            answer = self.answers.setdefault(kiosk_id, asyncio.Event())
            await answer.wait()
            self.answered.append(kiosk_id + label)

        return asking

    async def answer(self, kiosk_id: str) -> None:
        self.answers.setdefault(kiosk_id, asyncio.Event()).set()
        await settle()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_few_asks_are_under_way_and_the_others_follow_in_the_order_taken() -> None:
    kiosks, asks = Kiosks(), StateAsks(at_once=2, turn_s=TURN_S)
    for kiosk in ("k1", "k2", "k3", "k4"):
        asks.add(kiosk, kiosks.ask(kiosk))
    await settle()
    assert kiosks.sent == ["k1", "k2"]
    assert asks.waiting() == ["k3", "k4"]
    await kiosks.answer("k2")
    assert kiosks.sent == ["k1", "k2", "k3"]
    await kiosks.answer("k1")
    await kiosks.answer("k3")
    await kiosks.answer("k4")
    assert kiosks.sent == ["k1", "k2", "k3", "k4"]
    assert asks.waiting() == []


async def test_a_kiosk_that_sends_an_event_is_asked_at_once() -> None:
    kiosks, asks = Kiosks(), StateAsks(at_once=1, turn_s=TURN_S)
    for kiosk in ("k1", "k2", "k3"):
        asks.add(kiosk, kiosks.ask(kiosk))
    asks.hurry("k3")  # its scan may wait for the events it is to send again
    asks.hurry("k1")  # under way already: nothing more
    await settle()
    assert kiosks.sent == ["k1", "k3"]
    await kiosks.answer("k1")
    await kiosks.answer("k3")
    assert kiosks.sent == ["k1", "k3", "k2"]
    asks.cancel()


async def test_a_kiosk_taken_again_is_asked_once_and_one_released_not_at_all() -> None:
    kiosks, asks = Kiosks(), StateAsks(at_once=1, turn_s=TURN_S)
    asks.add("k1", kiosks.ask("k1"))
    asks.add("k2", kiosks.ask("k2", " first take"))
    asks.add("k3", kiosks.ask("k3"))
    asks.add("k2", kiosks.ask("k2", " taken again"))
    asks.discard("k3")  # its lease released before its turn
    await kiosks.answer("k1")
    await kiosks.answer("k2")
    assert kiosks.sent == ["k1", "k2 taken again"]
    assert asks.waiting() == []


async def test_cancel_ends_the_asks_under_way_and_forgets_the_others() -> None:
    kiosks, asks = Kiosks(), StateAsks(at_once=1, turn_s=TURN_S)
    asks.add("k1", kiosks.ask("k1"))
    asks.add("k2", kiosks.ask("k2"))
    await settle()
    asks.cancel()
    await settle()
    assert kiosks.sent == ["k1"]
    assert asks.waiting() == []
    await kiosks.answer("k1")
    assert kiosks.sent == ["k1"]


async def test_a_kiosk_that_does_not_answer_holds_its_turn_only_so_long() -> None:
    """A kiosk whose last status said online but that is gone holds up the others for a turn
    (`TURN_S`), not for its ask's timeout; its ask goes on meanwhile."""
    kiosks, asks = Kiosks(), StateAsks(at_once=1, turn_s=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    asks.add("gone", kiosks.ask("gone"))
    asks.add("k2", kiosks.ask("k2"))
    await settle()
    assert kiosks.sent == ["gone"]
    while kiosks.sent == ["gone"]:  # the turn ends on the loop's own clock
        assert loop.time() - started < 30, "the next ask never started"
        await asyncio.sleep(0.01)
    assert kiosks.sent == ["gone", "k2"]
    assert loop.time() - started >= 0.04  # a turn's length (the loop may fire a hair early)
    await kiosks.answer("gone")  # its ask went on past its turn, and ends with the answer
    assert kiosks.answered == ["gone"]
    asks.cancel()
