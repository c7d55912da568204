"""A scripted kiosk at the MQTT boundary: it behaves like the real bridge as the service sees it.

It publishes a retained status (with an offline last will) and retained compartment snapshots,
answers commands on their `reply_to` (accepted, then a final status; a redelivered request_id is
answered from a cache, an expired command is rejected), runs disinfection cycles on a timer
(scaled by `time_scale`), and lets a test act as the physical world: open and close doors, place
and remove items, scan a code, change temperatures, raise faults, reboot, crash.

Deliberately simple physics: a door can only be opened while its lock is released (or forced,
which is what an unexplained opening looks like), the lock latches again when the door shuts.

    kiosk = ScriptedKiosk(host, port, "k-" + uuid4().hex[:8], compartments=4).start()
    ...
    await kiosk.wait_for_command("unlock")
    kiosk.open_door(1); kiosk.place_item(1); kiosk.close_door(1)
    kiosk.stop()
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import ValidationError

from firmware_bridge import contract
from firmware_bridge.mqtt import kept_once_sent

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0  # generous: tests share two cores with five other test runs


@dataclass
class CompartmentModel:
    n: int
    door_open: bool = False
    lock_released: bool = False
    occupied: bool = False
    setpoint_c: float | None = None
    temp_c: float | None = 21.0
    uv_on: bool = False
    disinfect_until: float | None = None  # monotonic time the running cycle ends
    fault: contract.FaultName | None = None
    timer: threading.Timer | None = None

    def snapshot(self) -> contract.CompartmentSnapshot:
        remaining = 0.0
        if self.disinfect_until is not None:
            remaining = max(0.0, self.disinfect_until - time.monotonic())
        heater_on = (
            self.setpoint_c is not None
            and self.temp_c is not None
            and self.temp_c < self.setpoint_c
        )
        return contract.CompartmentSnapshot(
            n=self.n,
            door_open=self.door_open,
            lock_released=self.lock_released,
            occupied=self.occupied,
            heater_on=heater_on,
            uv_on=self.uv_on,
            disinfecting=self.disinfect_until is not None,
            disinfect_remaining_s=int(remaining),
            temp_c=self.temp_c,
            setpoint_c=self.setpoint_c,
            fault=self.fault,
        )


@dataclass(frozen=True)
class ScriptedAnswer:
    """What the kiosk answers to the next command of one action, instead of doing it."""

    # failed / rejected / timed_out, "accept_only" (never final), "silent", or "later" (kept
    # until `answer_later`, then done)
    status: str
    detail: str | None = None


@dataclass
class ReceivedCommand:
    command: contract.Command
    duplicate: bool
    received_at: float = field(default_factory=time.monotonic)
    # Set once the kiosk has done with it (executed, answered or kept silent): until then its
    # effect on the compartments may not be there yet.
    handled: bool = False


class ScriptedKiosk:
    def __init__(
        self,
        host: str,
        port: int,
        kiosk_id: str | None = None,
        *,
        compartments: int = 8,
        time_scale: float = 1.0,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
        username: str | None = None,
        password: str | None = None,
        fw: str = "scripted-1.0",
        client_id: str | None = None,
        clock_behind_s: float = 0.0,
        persistent: bool = False,
    ) -> None:
        self.host, self.port = host, port
        self.kiosk_id = kiosk_id or f"kiosk-{uuid.uuid4().hex[:10]}"
        self.topics = contract.Topics(self.kiosk_id)
        self.time_scale = time_scale
        # Its clock against the machine's: it stamps what it sends and judges a command's
        # `expires_at` by it, as a bridge does by its own.
        self.clock_behind_s = clock_behind_s
        self.fw = fw
        self.boot_id = uuid.uuid4().hex[:8]
        self._state = "online"  # as its status last said
        self.compartments = {n: CompartmentModel(n) for n in range(1, compartments + 1)}
        self.received: list[ReceivedCommand] = []
        self.supplies: list[contract.OfflineSupply] = []  # what the service sent for offline
        self.replies: list[contract.Reply] = []
        self.events: list[contract.Event] = []
        self.telemetry: list[contract.Telemetry] = []  # every batch published, in order
        self._lock = threading.RLock()
        self._seq = 0  # the last event number given (Event.seq)
        self._connected = threading.Event()  # connected and subscribed to its commands
        self._subscribe_mid: int | None = None
        self._reply_cache: dict[str, contract.Reply] = {}
        self._script: dict[str, list[ScriptedAnswer]] = {}
        self._later: list[contract.Command] = []
        self._silent = False
        self._protocol = protocol
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"scripted-{self.kiosk_id}",
            protocol=protocol,
            # A persistent session (MQTT 3.1.1): the broker keeps its subscriptions and the
            # commands sent while it is away.
            clean_session=False if persistent else None,
        )
        if username:
            self._client.username_pw_set(username, password)
        self._client.will_set(
            self.topics.status, self._status("offline").to_json(), qos=1, retain=True
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ScriptedKiosk:
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT_S):
            raise TimeoutError(f"scripted kiosk could not connect to {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        """A clean shutdown: retained offline status, then disconnect."""
        with self._lock:
            for c in self.compartments.values():
                if c.timer is not None:
                    c.timer.cancel()
        if self._client.is_connected():
            self._client.publish(
                self.topics.status, self._status("offline").to_json(), qos=1, retain=True
            ).wait_for_publish(5)
        self._client.disconnect()
        self._client.loop_stop()

    def stay_away(self) -> None:
        """Stop talking to the broker (paho's loop stops); `come_back` reconnects."""
        self._client.loop_stop()

    def come_back(self) -> None:
        self._client.loop_start()

    def crash(self) -> None:
        """The kiosk PC loses power: the socket dies without DISCONNECT, so the will fires."""
        self._client.loop_stop()
        sock = self._client.socket()
        if sock is not None:
            sock.close()

    def clear_retained(self) -> None:
        """Remove this kiosk's retained messages so a shared broker does not keep them."""
        self._client.publish(self.topics.status, b"", qos=1, retain=True)
        for n in self.compartments:
            self._client.publish(self.topics.compartment_state(n), b"", qos=1, retain=True)

    # -- scripting the kiosk's answers -----------------------------------------------------------

    def script(self, action: str, status: str, detail: str | None = None) -> None:
        """Answer the next `action` command with `status` instead of executing it."""
        with self._lock:
            self._script.setdefault(action, []).append(ScriptedAnswer(status, detail))

    def answer_later(self) -> int:
        """Do the commands scripted "later" now, as if they had just come (their `accepted`
        is said again); returns how many."""
        with self._lock:
            later, self._later = self._later, []
        for command in later:
            self._handle(command, None)
        return len(later)

    def start_cycle(self, n: int, duration_s: int) -> None:
        """The board starts a cycle on its own time (after a scripted `accept_only`)."""
        with self._lock:
            self._start_cycle(self.compartments[n], duration_s)
        self.publish_snapshot(n)

    def complete_cycle(self, n: int) -> None:
        """The running cycle of compartment `n` runs out now (a test that must not race it)."""
        self._complete_cycle(n)

    def go_silent(self, silent: bool = True) -> None:
        """Receive commands but answer none (a bridge whose board link hangs)."""
        self._silent = silent

    def now(self) -> datetime:
        """The time by this kiosk's clock."""
        return contract.utcnow() - timedelta(seconds=self.clock_behind_s)

    def answer(self, request_id: str, status: str, detail: str | None = None) -> None:
        """Give a command received earlier its final answer now (a bridge that finished it while
        it was cut off, and answers once it is back)."""
        with self._lock:
            [command] = [r.command for r in self.received if r.command.request_id == request_id]
        self._reply(command, status, detail)

    # -- the physical world ----------------------------------------------------------------------

    def open_door(self, n: int, *, force: bool = False) -> None:
        with self._lock:
            c = self.compartments[n]
            if c.door_open:
                return
            if not c.lock_released and not force:
                raise RuntimeError(f"compartment {n} is locked")
            c.door_open = True
        self.publish_event("door_opened", n, {"forced": force} if force else {})
        self.publish_snapshot(n)

    def close_door(self, n: int) -> None:
        with self._lock:
            c = self.compartments[n]
            if not c.door_open:
                return
            c.door_open = False
            c.lock_released = False  # the latch catches when the door shuts
        self.publish_event("door_closed", n)
        self.publish_snapshot(n)

    def release_latch(self, n: int) -> None:
        """The latch released by the kiosk itself (an offline pickup's unlock)."""
        with self._lock:
            self.compartments[n].lock_released = True
        self.publish_snapshot(n)

    def relatch(self, n: int) -> None:
        """A released latch whose door was never pulled springs back (the board's 60 s)."""
        with self._lock:
            c = self.compartments[n]
            if c.door_open or not c.lock_released:
                return
            c.lock_released = False
        self.publish_snapshot(n)

    def place_item(self, n: int) -> None:
        self._set_occupied(n, True, "item_placed")

    def remove_item(self, n: int) -> None:
        self._set_occupied(n, False, "item_removed")

    def _set_occupied(self, n: int, occupied: bool, event: str) -> None:
        with self._lock:
            c = self.compartments[n]
            if not c.door_open:
                raise RuntimeError(f"compartment {n}: the door is shut")
            if c.occupied == occupied:
                return
            c.occupied = occupied
        self.publish_event(event, n)
        self.publish_snapshot(n)

    def scan(self, text: str) -> None:
        self.publish_event("scan", None, {"text": text})

    def set_temperature(self, n: int, temp_c: float | None) -> None:
        """The probe reads `temp_c`; on return the broker holds it as the compartment's retained
        state, so a service that subscribes afterwards never reads the older snapshot first.
        Called from the test's thread (it waits for the broker's acknowledgement)."""
        with self._lock:
            self.compartments[n].temp_c = temp_c
        sent = self.publish_snapshot(n)
        sent.wait_for_publish(CONNECT_TIMEOUT_S)
        if not sent.is_published():
            raise TimeoutError(f"compartment {n}'s snapshot not acknowledged by the broker")

    def raise_fault(self, n: int, fault: contract.FaultName) -> None:
        with self._lock:
            c = self.compartments[n]
            c.fault = fault
            c.setpoint_c = None
            aborted = c.disinfect_until is not None
            if aborted:  # as the board: any fault aborts a running cycle
                if c.timer is not None:
                    c.timer.cancel()
                c.uv_on, c.disinfect_until, c.timer = False, None, None
        self.publish_event("fault_raised", n, {"fault": fault})
        if aborted:
            self.publish_event("disinfection_aborted", n)
        self.publish_snapshot(n)

    def clear_fault(self, n: int) -> None:
        with self._lock:
            c = self.compartments[n]
            fault, c.fault = c.fault, None
        self.publish_event("fault_cleared", n, {"fault": fault})
        self.publish_snapshot(n)

    def reboot(self) -> None:
        """The board restarts: new boot id, setpoints and cycles lost, doors as they were."""
        with self._lock:
            self.boot_id = uuid.uuid4().hex[:8]
            for c in self.compartments.values():
                if c.timer is not None:
                    c.timer.cancel()
                c.setpoint_c, c.uv_on, c.disinfect_until, c.lock_released = None, False, None, False
        self.publish_event("board_rebooted", None, {"boot_id": self.boot_id})
        self.publish_status("online")
        for n in self.compartments:
            self.publish_snapshot(n)

    # -- publishing ------------------------------------------------------------------------------

    def _status(self, state: str) -> contract.KioskStatus:
        return contract.KioskStatus(
            state=state,
            boot_id=self.boot_id,
            fw=self.fw,
            compartments=len(self.compartments),
            board_online=state == "online",
            ts=self.now(),
        )

    def publish_status(self, state: str | None = None) -> None:
        """Its status, `state` from now on if given (else as it last said: online at first)."""
        if state is not None:
            self._state = state
        status = self._status(self._state)
        self._client.publish(self.topics.status, status.to_json(), qos=1, retain=True)

    def publish_snapshot(self, n: int) -> mqtt.MQTTMessageInfo:
        with self._lock:
            snap = self.compartments[n].snapshot().model_copy(update={"ts": self.now()})
        return self._client.publish(
            self.topics.compartment_state(n), snap.to_json(), qos=1, retain=True
        )

    def publish_event(
        self,
        type_: str,
        compartment: int | None,
        data: dict[str, Any] | None = None,
        ts: datetime | None = None,
    ) -> contract.Event:
        """Journal and send an event, stamped now by this kiosk's clock or at `ts` (one its
        outbox kept while it was cut off)."""
        with self._lock:  # numbered as the bridge's outbox does: one more than the last
            self._seq += 1
            event = contract.Event(
                event_id=uuid.uuid4().hex,
                type=type_,
                compartment=compartment,
                data=data or {},
                seq=self._seq,
                ts=self.now() if ts is None else ts,
            )
            self.republish_event(event)
        return event

    def republish_event(self, event: contract.Event) -> None:
        """Send an event (again): MQTT is at-least-once, so the service must tolerate this."""
        # Recorded and handed to paho under one lock: the door events (the test's thread) and the
        # cycle's end (a timer thread) then reach the broker in the order `events` lists them.
        with self._lock:
            self.events.append(event)
            self._client.publish(self.topics.events, event.to_json(), qos=1)

    def _resend_after(self, seq: int) -> None:
        """As the bridge's outbox (docs/adr/0092): every event it numbered after `seq`, once
        each and in order, with its id and number, a scan without its text; not listed in
        `events` again."""
        with self._lock:
            sent = {e.event_id: e for e in self.events if e.seq is not None and e.seq > seq}
            for event in sorted(sent.values(), key=lambda e: e.seq or 0):
                payload = kept_once_sent(event.to_json())
                self._client.publish(self.topics.events, payload, qos=1)

    def publish_telemetry(self) -> contract.Telemetry:
        with self._lock:
            readings = [
                contract.Reading(
                    n=c.n,
                    temp_c=c.temp_c,
                    setpoint_c=c.setpoint_c,
                    heater=c.snapshot().heater_on,
                )
                for c in self.compartments.values()
            ]
        telemetry = contract.Telemetry(readings=readings, ts=self.now())
        with self._lock:
            self.telemetry.append(telemetry)
            self._client.publish(self.topics.telemetry, telemetry.to_json(), qos=0)
        return telemetry

    def _resend_telemetry_after(self, after: datetime) -> None:
        """As the bridge (docs/adr/0098): every batch published stamped after `after`, in
        order, marked `resent`."""
        with self._lock:
            for telemetry in self.telemetry:
                if telemetry.ts > after:
                    again = telemetry.model_copy(update={"resent": True})
                    self._client.publish(self.topics.telemetry, again.to_json(), qos=0)

    def publish_raw(self, leaf: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Anything on `lockers/v1/<kiosk>/<leaf>`, e.g. a malformed payload."""
        self._client.publish(f"{self.topics.prefix}/{leaf}", payload, qos=qos, retain=retain)

    # -- waiting (for async tests) ---------------------------------------------------------------

    async def wait_until(
        self, predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"scripted kiosk {self.kiosk_id}: no {what} in {timeout_s} s")
            await asyncio.sleep(0.02)

    async def wait_for_command(
        self, action: str, compartment: int | None = None, timeout_s: float = 10.0, after: int = 0
    ) -> contract.Command:
        """The first command of `action` (for `compartment`) received at index >= `after`, once
        the kiosk has handled it: its effect on the compartments is there when this returns."""
        found: list[contract.Command] = []

        def seen() -> bool:
            with self._lock:
                for item in self.received[after:]:
                    cmd = item.command
                    if not item.handled:
                        continue
                    if cmd.action == action and compartment in (None, contract.compartment_of(cmd)):
                        found.append(cmd)
                        return True
            return False

        await self.wait_until(seen, timeout_s, f"{action} command")
        return found[0]

    # -- paho callbacks (paho's thread) -----------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.error("scripted kiosk refused by broker: %s", reason_code)
            return
        _, self._subscribe_mid = client.subscribe([(self.topics.cmd, 1), (self.topics.offline, 0)])
        self.publish_status("online")
        for n in self.compartments:
            self.publish_snapshot(n)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        # Started only once the broker holds the command subscription: a test that sends a
        # command right after start() must not race the SUBACK.
        if mid == self._subscribe_mid:
            self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.topics.offline:
            with self._lock:
                self.supplies.append(contract.OfflineSupply.model_validate_json(message.payload))
            return
        try:
            command = contract.command_from_json(message.payload)
        except ValidationError as exc:
            log.warning("scripted kiosk dropped a malformed command: %s", exc)
            return
        with self._lock:
            cached = self._reply_cache.get(command.request_id)
            item = ReceivedCommand(command, duplicate=cached is not None)
            self.received.append(item)
        try:
            self._handle(command, cached)
        finally:
            with self._lock:
                item.handled = True

    def _handle(self, command: contract.Command, cached: contract.Reply | None) -> None:
        if self._silent:
            return
        if cached is not None:
            self._reply(command, cached.status, cached.detail, cache=False)
            return
        if command.expired(self.now()):
            self._reply(command, "rejected", "expired")
            return
        self._reply(command, "accepted", None, cache=False)
        with self._lock:
            scripted = self._script.get(command.action)
            answer = scripted.pop(0) if scripted else None
        if answer is not None:
            if answer.status == "later":
                with self._lock:
                    self._later.append(command)
                return
            if answer.status == "accept_only":
                return
            if answer.status != "silent":
                self._reply(command, answer.status, answer.detail)
            return
        if isinstance(command, contract.ReportStateCommand):
            # As the bridge: the events it was asked for sent again, its status (as it last
            # said) and every snapshot published again, then the answer; offline, its status
            # and a failure.
            if command.args.events_after is not None:
                self._resend_after(command.args.events_after)
            if command.args.readings_after is not None:
                self._resend_telemetry_after(command.args.readings_after)
            self.publish_status()
            if self._state != "online":
                self._reply(command, "failed", "board offline")
                return
            for n in self.compartments:
                self.publish_snapshot(n)
            self._reply(command, "succeeded", None)
            return
        status, detail = self._execute(command)
        self._reply(command, status, detail)

    def _reply(
        self, command: contract.Command, status: str, detail: str | None, cache: bool = True
    ) -> None:
        reply = contract.Reply(
            request_id=command.request_id,
            status=status,
            detail=detail,
            ts=self.now(),
            # As the bridge names a board's ERR FAULTED refusal.
            data={"error": "faulted"} if (detail or "").startswith("faulted:") else {},
        )
        with self._lock:
            if cache:
                self._reply_cache[command.request_id] = reply
            self.replies.append(reply)
        self._client.publish(command.reply_to, reply.to_json(), qos=1)

    def _execute(self, command: contract.CompartmentCommand) -> tuple[str, str | None]:
        n = command.compartment
        if n not in self.compartments:
            return "rejected", f"no compartment {n}"
        args = command.args
        with self._lock:
            c = self.compartments[n]
            # As the board: no fault refuses an UNLOCK (food is never locked in by a broken
            # heater) or switching a heater off; everything else waits for CLEAR_FAULT.
            refused = command.action not in (
                "clear_fault",
                "unlock",
                "abort_disinfection",
            ) and not (isinstance(args, contract.SetHeaterArgs) and args.setpoint_c is None)
            if c.fault is not None and refused:
                return "failed", f"faulted: {c.fault}"
            if isinstance(args, contract.UnlockArgs):
                if c.disinfect_until is not None and not args.override_cycle:
                    return "rejected", "interlock: disinfection running"
                if c.disinfect_until is not None:
                    self._end_cycle(c, "disinfection_aborted")
                c.lock_released = True
            elif isinstance(args, contract.SetHeaterArgs):
                c.setpoint_c = args.setpoint_c
            elif isinstance(args, contract.StartDisinfectionArgs):
                if c.door_open:
                    return "failed", "interlock: door open"
                self._start_cycle(c, args.duration_s)
            elif command.action == "abort_disinfection":
                if c.disinfect_until is not None:
                    self._end_cycle(c, "disinfection_aborted")
            elif command.action == "clear_fault" and c.fault is not None:
                c.fault = None
                self.publish_event("fault_cleared", n)
        self.publish_snapshot(n)
        return "succeeded", None

    def _start_cycle(self, c: CompartmentModel, duration_s: int) -> None:
        if c.timer is not None:  # as the board does: a restart replaces the remaining time
            c.timer.cancel()
        real_s = duration_s / self.time_scale
        c.uv_on, c.disinfect_until = True, time.monotonic() + real_s
        c.timer = threading.Timer(real_s, self._complete_cycle, args=(c.n,))
        c.timer.daemon = True
        c.timer.start()
        self.publish_event("disinfection_started", c.n, {"duration_s": duration_s})

    def _end_cycle(self, c: CompartmentModel, event: str) -> None:
        if c.timer is not None:
            c.timer.cancel()
        c.uv_on, c.disinfect_until, c.timer = False, None, None
        self.publish_event(event, c.n)

    def _complete_cycle(self, n: int) -> None:
        with self._lock:
            c = self.compartments[n]
            if c.disinfect_until is None:
                return
            self._end_cycle(c, "disinfection_completed")
        self.publish_snapshot(n)
