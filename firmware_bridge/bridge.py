"""The bridge supervisor: wires the board, the scanner and MQTT together for one kiosk.

Threads and who owns what:
- the board thread owns the serial port, the board client, the tracker and every running
  command; it polls STATUS, executes commands between polls and turns answers into news;
- paho's thread validates incoming commands, answers duplicates and expired ones from the
  request cache, and queues the rest for the board thread (it never touches the port);
- the scanner thread turns lines into `scan` events;
- the event pump (in `MqttLink`) sends the outbox in order.

The bridge decides nothing about who may open what while the service can be reached: it
executes what the service asks, reports what the board shows, and keeps the board reachable.
Cut off from the service, it decides pickups alone from what the service supplied
(`offline.OfflineBook`, docs/adr/0077) and journals each in the event outbox.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from firmware_bridge.board import (
    BoardAnswerInvalid,
    BoardClient,
    BoardError,
    BoardRefused,
    BoardUnreachable,
)
from firmware_bridge.config import BridgeSettings
from firmware_bridge.contract import (
    AbortDisinfectionCommand,
    ClearFaultCommand,
    CompartmentCommand,
    CompartmentSnapshot,
    Event,
    KioskStatus,
    OfflineSupply,
    Reading,
    Reply,
    ReportStateCommand,
    SetHeaterCommand,
    StartDisinfectionCommand,
    Telemetry,
    UnlockCommand,
    command_from_dict,
    command_from_json,
    compartment_of,
)
from firmware_bridge.contract import Command as WireCommand
from firmware_bridge.contract.codes import normalise_code, token_from_scan
from firmware_bridge.mqtt import MqttLink
from firmware_bridge.offline import Decision, Method, OfflineBook, Opened, Refused
from firmware_bridge.scanner import ScannerReader
from firmware_bridge.screen import ScreenServer
from firmware_bridge.store import BridgeStore
from firmware_bridge.tracker import (
    CompartmentTracker,
    CompartmentView,
    Observation,
    RawEvent,
    fault_name,
)
from firmware_bridge.transport import Backoff, SerialTransport, TransportError
from hardware.protocol import BoardFlags, CompartmentStatus, ErrorCode, FaultCode, HelloAnswer
from hardware.protocol.messages import (
    CYCLE_REPORT_SINCE,
    STATUS_HEADER_SIZE,
    STATUS_MAX_PER_ANSWER,
    STATUS_RECORD_SIZE,
    UNLOCK_REPORT_SINCE,
    CycleReportAnswer,
    CycleState,
    wire_time_s,
)

log = logging.getLogger(__name__)

JAMMED = fault_name(FaultCode.LOCK_JAMMED)  # the one fault that does not hold the food

CYCLE_ENDS = ("disinfection_completed", "disinfection_aborted")

# A command waits for at most one STATUS page on the wire: pages are cut to about this long.
STATUS_PAGE_BUDGET_S = 0.008
STATUS_PAGE_MIN = 4  # below that, per-request overhead outweighs the shorter wait


def poll_wire_time_s(compartments: int, page: int, baud: int) -> float:
    """Wire time of one full poll: every STATUS request and its answer."""
    pages = -(-compartments // page)
    request_bytes = 6 + 2 + 2 + 2  # header, first/count, CRC, COBS and delimiter
    answer_bytes = STATUS_HEADER_SIZE + 6 + 2 + 2  # header, CRC, COBS and delimiter
    return wire_time_s(pages * (request_bytes + answer_bytes) + compartments * 10, baud)


def status_page_size(baud: int) -> int:
    """Records per STATUS request at this baud rate (7 at 115200, 24 at 9600).

    Each page costs a request and a frame of its own (~25 bytes); at a slow baud rate that
    overhead would stretch the whole poll, so slow lines use full pages.
    """
    answer_overhead_bytes = STATUS_HEADER_SIZE + 6 + 2 + 1  # header, CRC, COBS, delimiter
    fits = int((STATUS_PAGE_BUDGET_S * baud / 10 - answer_overhead_bytes) // STATUS_RECORD_SIZE)
    return STATUS_MAX_PER_ANSWER if fits < STATUS_PAGE_MIN else min(fits, STATUS_MAX_PER_ANSWER)


STORE_FILE = "bridge.sqlite3"
# Commands waiting for the serial line. A bank has at most 48 compartments and one command
# takes milliseconds; more waiting than this is a runaway sender, and is refused, not hoarded.
COMMAND_QUEUE_MAX = 64
PORT_RETRY_CAP_S = 5.0  # a port that cannot be opened is tried again at least this often
# Unlocks the bridge decided alone (docs/adr/0077): their replies go to no one.
LOCAL_REQUEST_PREFIX = "offline-"
LOCAL_UNLOCK_DEADLINE_S = 3.0


@dataclass(slots=True)
class UnlockWatch:
    """An unlock waiting for the board to show the lock released or the door open."""

    command: UnlockCommand
    deadline: float  # monotonic
    before: CompartmentView | None  # the compartment as last seen before the unlock
    answered: bool = False  # the board acknowledged the UNLOCK frame

    @classmethod
    def start(cls, command: UnlockCommand, before: CompartmentView | None) -> UnlockWatch:
        return cls(command, time.monotonic() + command.args.deadline_s, before)

    def effect_seen(self, view: CompartmentView | None) -> bool:
        """The board showed the unlock's effect after it was asked: lock released, door open,
        or a door opening counted since (a door opened and shut again between two polls)."""
        if view is None or view is self.before:
            return False  # not polled since the command (or only known from disk): no proof
        if view.lock_released or view.door_open:
            return True
        before = self.before
        # Counters restart with a board boot: only a difference within one boot is an opening.
        return before is not None and before.boot_id == view.boot_id and before.opens != view.opens


@dataclass(slots=True)
class BoardInfo:
    """What the last HELLO said, and whether the board answers now."""

    hello: HelloAnswer | None = None
    online: bool = False
    compartments: int = 0


class Bridge:
    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.store = BridgeStore(
            Path(settings.data_dir) / STORE_FILE,
            event_limit=settings.event_queue_max,
            request_limit=settings.request_cache_max,
        )
        self.transport = SerialTransport(settings.board_url, settings.baud)
        self.board = BoardClient(
            self.transport, settings.node_address, answer_margin_s=settings.answer_margin_s
        )
        self.tracker = CompartmentTracker()
        self.offline = OfflineBook(self.store, time_scale=settings.time_scale)
        self.link = MqttLink(
            settings,
            self.store,
            self._receive_command,
            self._broker_connected,
            self._receive_supply,
        )
        self.scanner = (
            ScannerReader(settings.scanner_url, settings.scanner_baud, self._scanned)
            if settings.scanner_url
            else None
        )
        self.info = BoardInfo()
        self._commands: queue.Queue[CompartmentCommand] = queue.Queue(COMMAND_QUEUE_MAX)
        # `report_state` requests: answered by the board thread at the end of its round
        # (`_answer_reports`).
        self._reports: queue.SimpleQueue[ReportStateCommand] = queue.SimpleQueue()
        self._unlocks: dict[str, UnlockWatch] = {}
        # Cycle starts whose outcome is unknown (the bridge restarted mid-start, the board's
        # answer lost or garbled): the board's next report of the compartment answers them.
        self._starts: dict[str, StartDisinfectionCommand] = {}
        # Offline pickups whose unlock has not finished: request id -> order id.
        self._local_unlocks: dict[str, str] = {}
        self._local_lock = threading.Lock()
        # Told of each offline pickup's outcome (the kiosk screen): a dict like the service's
        # `pickup` stream event.
        self.offline_listeners: list[Callable[[dict[str, Any]], None]] = []
        self._republish = threading.Event()
        self._stop = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._board_loop, name="board", daemon=True)
        self._next_telemetry = 0.0
        self._status_page = status_page_size(settings.baud)
        self._lease_handled = False  # setpoints already re-sent for the current lease expiry
        self._status_told = False  # the first try at the board has been reported
        self._restore()
        self.screen = (
            ScreenServer(
                self, settings.screen_host, settings.screen_port, settings.screen_service_url
            )
            if settings.screen_port is not None
            else None
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.link.start()
        self._thread.start()
        if self.scanner is not None:
            self.scanner.start()
        if self.screen is not None:
            self.screen.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self.screen is not None:
            self.screen.stop()
        if self.scanner is not None:
            self.scanner.stop()
        self._thread.join(5.0)
        self.link.stop()
        self.transport.close()
        self.store.close()

    def run_until(self, stop: threading.Event) -> None:
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()

    def _restore(self) -> None:
        """Pick up where a previous run left off: last board state and unfinished commands."""
        remembered = self.store.remembered()
        views = {
            n: CompartmentView.from_dict({"boot_id": r.boot_id or 0, **r.state})
            for n, r in remembered.items()
            if r.state is not None
        }
        boot_ids = {r.boot_id for r in remembered.values() if r.boot_id is not None}
        self.tracker.restore(boot_ids.pop() if len(boot_ids) == 1 else None, views)
        for record in self.store.unfinished_requests():
            try:
                command = command_from_dict(record.command)
            except ValidationError:
                continue
            self._resume(command)

    def _resume(self, command: WireCommand) -> None:
        """A command the previous run accepted but did not finish. Never execute twice."""
        if isinstance(command, ReportStateCommand):
            self._ask_report(command)  # the state as it is now, once the board is read
        elif isinstance(command, UnlockCommand):
            # The pulse may or may not have happened: report what the board shows, never pulse.
            self._unlocks[command.request_id] = UnlockWatch.start(
                command, self.tracker.views.get(command.compartment)
            )
        elif isinstance(command, StartDisinfectionCommand):
            # Starting it again could double a UV dose, so it is not repeated: the board's next
            # report says whether it started (docs/adr/0090).
            self._starts[command.request_id] = command
        else:
            # Setting a heater, aborting a cycle and clearing a fault set a state: repeating
            # them is harmless, so they are run again.
            self._enqueue(command)

    # -- incoming commands (paho's thread) ----------------------------------------------------

    def _receive_command(self, payload: bytes) -> None:
        try:
            command = command_from_json(payload)
        except ValidationError as exc:
            self._reject_malformed(payload, exc)
            return
        if command.expires_at > datetime.now(UTC):
            self.offline.heard()  # a fresh command: the service is there
        previous = self.store.claim_request(command.request_id, command.model_dump(mode="json"))
        if previous is not None:
            log.info("duplicate %s (%s): answered from cache", command.request_id, previous.status)
            reply = (
                Reply.model_validate(previous.reply)
                if previous.reply is not None
                else Reply(request_id=command.request_id, status="accepted")
            )
            self.link.publish_reply(command.reply_to, reply)
            return
        if command.expired():
            self._finish(command, "rejected", "expired before it reached the kiosk")
            return
        if isinstance(command, ReportStateCommand):
            # Answered by the board thread, which alone reads the board and says its status.
            self.link.publish_reply(
                command.reply_to, Reply(request_id=command.request_id, status="accepted")
            )
            self._ask_report(command)
            return
        if self._status_told and not self.info.online:
            # Known offline: say so now, not after the next try at the port (up to 5 s).
            self._finish(command, "failed", "board offline")
            return
        # The claim stored it as accepted already: publish, no second write on the way.
        self.link.publish_reply(
            command.reply_to, Reply(request_id=command.request_id, status="accepted")
        )
        self._enqueue(command)

    def _enqueue(self, command: CompartmentCommand) -> None:
        try:
            self._commands.put_nowait(command)
        except queue.Full:
            self._finish(
                command, "rejected", f"{COMMAND_QUEUE_MAX} commands already wait for the board"
            )

    def _reject_malformed(self, payload: bytes, exc: ValidationError) -> None:
        """Log and drop; if the payload still names a request and a reply topic, say why."""
        log.warning("dropped a malformed command: %s", _short_errors(exc))
        try:
            raw = json.loads(payload)
        except ValueError:
            return
        if not isinstance(raw, dict):
            return
        request_id, reply_to = raw.get("request_id"), raw.get("reply_to")
        if (
            isinstance(request_id, str)
            and 0 < len(request_id) <= 64
            and isinstance(reply_to, str)
            and 0 < len(reply_to) <= 256
            and not any(c in reply_to for c in "#+")
        ):
            self.link.publish_reply(
                reply_to,
                Reply(request_id=request_id, status="rejected", detail=_short_errors(exc)),
            )

    def _reply(
        self,
        command: WireCommand,
        status: str,
        detail: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Reply:
        reply = Reply.model_validate(
            {
                "request_id": command.request_id,
                "status": status,
                "detail": detail,
                "data": data or {},
            }
        )
        self.store.update_request(command.request_id, reply.model_dump(mode="json"), reply.final)
        if command.request_id.startswith(LOCAL_REQUEST_PREFIX):
            if reply.final and isinstance(command, UnlockCommand):  # an offline pickup's
                self._local_unlock_ended(command, reply)
        else:
            self.link.publish_reply(command.reply_to, reply)
        return reply

    def _finish(
        self,
        command: WireCommand,
        status: str,
        detail: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self._reply(command, status, detail, data)
        log.info(
            "%s %s%s: %s %s",
            command.request_id,
            command.action,
            "" if (n := compartment_of(command)) is None else f" n={n}",
            status,
            detail or "",
        )

    # -- scanner (scanner thread) -------------------------------------------------------------

    def _scanned(self, text: str) -> None:
        if self.cut_off():
            token = token_from_scan(text)
            code = None if token else normalise_code(text)
            # A token the last supply did not list, with the broker there: the service may be
            # too, with an order made since (its supplies stopped, or not yet come): it decides.
            ask_service = (
                token is not None
                and self.link.connected.is_set()
                and not self.offline.lists_token(token)
            )
            if (token is not None or code is not None) and not ask_service:
                self.pickup_offline(token=token, code=code)
                return
        self._emit(RawEvent("scan", None, {"text": text}))

    # -- offline pickups (docs/adr/0077) ------------------------------------------------------

    def cut_off(self) -> bool:
        """The service cannot be reached: pickups are decided here."""
        return self.offline.cut_off(self.link.connected.is_set())

    def knows_codes(self) -> bool:
        """Typed codes can be checked here (a supply came since this start)."""
        return self.offline.knows_codes

    def ready_orders(self) -> int:
        return self.offline.ready

    def _receive_supply(self, payload: bytes) -> None:
        try:
            supply = OfflineSupply.model_validate_json(payload)
        except ValidationError as exc:
            log.warning("dropped a malformed offline supply: %s", _short_errors(exc))
            return
        if not self.offline.take(supply):
            log.info("offline supply %s is older than the last one: ignored", supply.supply_id)

    def pickup_offline(self, *, token: str | None = None, code: str | None = None) -> Decision:
        """Check a QR token or typed code against the supply; if it opens, journal the pickup
        (before the unlock, so the service hears of it ahead of the door) and unlock."""
        held = self.tracker.held_by_faults()
        decision = (
            self.offline.decide_token(token, held)
            if token is not None
            else self.offline.decide_code(code or "", held)
        )
        if isinstance(decision, Refused):
            log.info("offline pickup refused: %s", decision.error)
            if code is not None and decision.error == "invalid_code":
                # A guess, or a typo: the service counts it toward the kiosk's daily budget of
                # wrong codes once it hears (never the digits typed).
                self._emit(RawEvent("offline_code_refused", None))
            self._tell_screen({"ok": False, "error": decision.error, "message": decision.message})
            return decision
        self._unlock_offline(decision)
        return decision

    def _unlock_offline(self, opened: Opened) -> None:
        request_id = f"{LOCAL_REQUEST_PREFIX}{uuid.uuid4().hex}"
        method: Method = opened.method
        self._emit(
            RawEvent(
                "offline_pickup",
                opened.compartment,
                {"order_id": opened.order_id, "method": method, "request_id": request_id},
            )
        )
        command = UnlockCommand(
            request_id=request_id,
            compartment=opened.compartment,
            args={"deadline_s": LOCAL_UNLOCK_DEADLINE_S},
            expires_at=datetime.now(UTC) + timedelta(seconds=LOCAL_UNLOCK_DEADLINE_S * 2),
            reply_to=self.link.topics.replies("offline"),
        )
        with self._local_lock:
            self._local_unlocks[request_id] = opened.order_id
        self.store.claim_request(request_id, command.model_dump(mode="json"))
        log.info(
            "offline pickup of order %s (%s): unlocking compartment %d",
            opened.order_id,
            method,
            opened.compartment,
        )
        self._enqueue(command)

    def _local_unlock_ended(self, command: UnlockCommand, reply: Reply) -> None:
        with self._local_lock:
            order_id = self._local_unlocks.pop(command.request_id, None)
        if reply.status == "succeeded":
            self._tell_screen({"ok": True, "compartment": command.compartment})
            return
        if reply.status == "timed_out":
            # The board took the UNLOCK but showed no effect in time: the latch may have
            # released. Her code stays used here; the service gives it back once it knows the
            # door never opened (its code-release timer).
            self._tell_screen(
                {
                    "ok": False,
                    "error": "unlock_unconfirmed",
                    "compartment": command.compartment,
                    "message": reply.detail or reply.status,
                }
            )
            return
        if order_id is not None:
            self.offline.give_back(order_id)  # refused by the board: nothing released
            # The service authorised the opening when it replayed the pickup: it withdraws it
            # and gives her code back when it hears this (in order, behind the pickup).
            self._emit(
                RawEvent(
                    "offline_pickup_failed",
                    command.compartment,
                    {
                        "order_id": order_id,
                        "request_id": command.request_id,
                        "status": reply.status,
                    },
                )
            )
        self._tell_screen(
            {"ok": False, "error": "kiosk_unreachable", "message": reply.detail or reply.status}
        )

    def _tell_screen(self, outcome: dict[str, Any]) -> None:
        for listener in list(self.offline_listeners):
            try:
                listener({**outcome, "offline": True})
            except Exception:
                log.exception("an offline pickup listener failed")

    # -- broker (the link's pump thread) -------------------------------------------------------

    def _broker_connected(self) -> None:
        """A connection's fresh status went (docs/adr/0111): the snapshots go again too."""
        self._republish.set()

    # -- board thread -------------------------------------------------------------------------

    def _board_loop(self) -> None:
        backoff = Backoff(initial_s=0.1, cap_s=PORT_RETRY_CAP_S)
        next_poll = time.monotonic()
        while not self._stop.is_set():
            try:
                if not self.transport.is_open:
                    self.transport.open()
                    self.board.reset_link()
                if not self.info.online:
                    self._handshake()
                    backoff.reset()
                self._serve_commands_until(next_poll)
                next_poll = time.monotonic() + self.settings.poll_period_s
                self._poll()
                self._housekeeping()
            except TransportError as exc:
                log.warning("board port: %s", exc)
                self.transport.close()
                self._board_lost(str(exc))
                self._stop.wait(backoff.next_delay_s())
            except BoardUnreachable as exc:
                log.warning("%s", exc)
                self._board_lost(str(exc))
                # The port is there but the board is silent (booting, powered off): PROTOCOL.md
                # has the master keep trying HELLO at its poll period.
                self._stop.wait(self.settings.poll_period_s)
            except BoardError as exc:
                log.warning("board: %s", exc)
                if not self._status_told:  # a HELLO answered with nonsense: still offline
                    self._publish_status()
                self._stop.wait(self.settings.poll_period_s)
            except Exception:
                log.exception("board loop failed; carrying on")
                self._stop.wait(self.settings.poll_period_s)
            # Unlock deadlines run out even while the board is unreachable.
            self._check_unlocks()
            try:
                self._answer_reports()
            except Exception:
                log.exception("answering report_state failed; carrying on")

    def _handshake(self) -> None:
        hello = self.board.hello()
        previous_boot = self.tracker.boot_id
        self.info = BoardInfo(hello=hello, online=True, compartments=hello.compartment_count)
        log.info(
            "board online: fw %s, boot %08x, %d compartments",
            hello.firmware,
            hello.boot_id,
            hello.compartment_count,
        )
        poll_s = poll_wire_time_s(hello.compartment_count, self._status_page, self.settings.baud)
        if poll_s > self.settings.poll_period_s:
            log.warning(
                "a poll of %d compartments takes %.0f ms on the wire at %d baud, longer than "
                "the poll period of %.0f ms: the line is never idle and every command waits "
                "for a STATUS page (PROTOCOL.md: at 9600 baud use 600 ms or more)",
                hello.compartment_count,
                poll_s * 1000,
                self.settings.baud,
                self.settings.poll_period_s * 1000,
            )
        if previous_boot is not None and previous_boot != hello.boot_id:
            self._restore_setpoints("the board rebooted")
        self._publish_status()
        self._republish.set()

    def _restore_setpoints(self, why: str, only: int | None = None) -> list[int]:
        """Send back the setpoints the service last asked for; the compartments restored.

        A board drops them when it reboots, when its heater lease runs out, and when a heater
        fault is cleared (PROTOCOL.md); the food must not wait for the service to notice.
        """
        restored = []
        for n, remembered in sorted(self.store.remembered().items()):
            if only is not None and n != only:
                continue
            if remembered.setpoint_known and n <= self.info.compartments:
                try:
                    self.board.set_heater(n, remembered.setpoint_dc)
                    restored.append(n)
                except BoardRefused as exc:
                    log.warning("setpoint of compartment %d not restored: %s", n, exc)
        if restored:
            log.info("setpoints of compartments %s re-sent: %s", restored, why)
        return restored

    def _board_lost(self, reason: str) -> None:
        if self.info.online or not self._status_told:
            self.info = BoardInfo(hello=self.info.hello, online=False)
            self._publish_status()
        # Nothing can be executed now: say so at once rather than let commands go stale.
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                break
            self._finish(command, "failed", f"board unreachable: {reason}")

    def _publish_status(self) -> bool:
        """Whether the status was handed to paho (the link remembers it anyway)."""
        self._status_told = True
        hello = self.info.hello
        return self.link.set_status(
            KioskStatus(
                state="online",
                boot_id=f"{hello.boot_id:08x}" if hello and self.info.online else None,
                fw=hello.firmware if hello else None,
                compartments=hello.compartment_count if hello else None,
                board_online=self.info.online,
            )
        )

    def _serve_commands_until(self, deadline: float) -> None:
        """Execute commands as they come until `deadline` (monotonic); at once if it is past."""
        while True:
            remaining_s = deadline - time.monotonic()
            try:
                command = (
                    self._commands.get(timeout=remaining_s)
                    if remaining_s > 0
                    else self._commands.get_nowait()
                )
            except queue.Empty:
                return
            self._execute(command)

    def _poll(self) -> None:
        count = self.info.compartments
        page = self._status_page
        for first in range(1, count + 1, page):
            answer = self.board.status(first, min(page, count - first + 1))
            if first == 1:
                lease_expired = bool(answer.board_flags & BoardFlags.HEATER_LEASE_EXPIRED)
                if lease_expired and not self._lease_handled:
                    # The link was silent past the lease (a long outage of this PC): the board
                    # switched every heater off and waits for setpoints. Once per episode: with
                    # no setpoint to give, the flag stays until the service sets one.
                    self._restore_setpoints("the heater lease had expired")
                self._lease_handled = lease_expired
            self._observe(answer.boot_id, list(answer.compartments))
            # Commands do not wait for the whole poll: the purchaser is standing there.
            self._serve_commands_until(0.0)

    def _observe(self, boot_id: int, records: list[CompartmentStatus]) -> None:
        hello = self.info.hello
        if hello is not None and boot_id != hello.boot_id:
            log.warning("board rebooted (boot %08x -> %08x)", hello.boot_id, boot_id)
            self._handshake()  # HELLO again, and the setpoints go back
        observation = self.tracker.observe(boot_id, records, time.time())
        # Unlocks first: the person at the door waits for that reply, not for the snapshots
        # and events of the same answer (written to disk and published right after).
        self._check_unlocks()
        self._judge_starts({record.number for record in records})
        self._report(boot_id, observation)

    def _judge_starts(self, reported: set[int]) -> None:
        """Answer the cycle starts whose outcome was unknown from the board's report of their
        compartment, just read: a cycle running means the start reached the board (it is not
        started twice, ADR 0082); none running means it did not, and the service may send a
        new start. A cycle that ran out or was stopped in between is reported by the tracker's
        events, and its start answered as not running."""
        for request_id, command in list(self._starts.items()):
            n = command.compartment
            if self.info.compartments and n > self.info.compartments:
                del self._starts[request_id]  # resumed, never checked: no report will come
                self._finish(command, "rejected", f"compartment {n} does not exist on this kiosk")
                continue
            if n not in reported:
                continue
            del self._starts[request_id]
            view = self.tracker.views.get(n)
            if view is not None and view.disinfecting:
                self._finish(
                    command,
                    "succeeded",
                    "the board shows the cycle running",
                    {"remaining_s": view.remaining_s},
                )
            else:
                self._finish(command, "failed", "the board shows no cycle running: not started")

    def _report(self, boot_id: int, observation: Observation) -> None:
        for raw in observation.events:
            if raw.type in CYCLE_ENDS:
                lamp = self._lamp_record(raw)
                if lamp is not None:
                    raw = RawEvent(raw.type, raw.compartment, {**raw.data, "lamp": lamp})
            self._emit(raw)
        for view in observation.remember:
            self.store.remember_state(view.n, boot_id, view.to_dict())
        for view in observation.snapshots:
            self.link.publish_snapshot(_snapshot(view))

    def _lamp_record(self, raw: RawEvent) -> dict[str, Any] | None:
        """The board's record of the lamp in the cycle that just ended, for its event: asked
        at once, while it is still the board's last cycle (boards of revision 3; docs/adr/0073).
        Without it the event still goes, and the service records the dose as not reported."""
        hello = self.info.hello
        n = raw.compartment
        if n is None or hello is None or hello.protocol < CYCLE_REPORT_SINCE:
            return None
        try:
            report = self.board.cycle_report(n)
        except (BoardError, TransportError) as exc:
            log.warning("compartment %s: no cycle report for its %s: %s", n, raw.type, exc)
            return None
        ended = CycleState.RAN_OUT if raw.type == "disinfection_completed" else CycleState.ABORTED
        if report.state != ended:
            # A reboot dropped the record, or the board disagrees with its own flags.
            log.warning(
                "compartment %s: %s, but the board's last cycle is %s",
                n,
                raw.type,
                report.state.name.lower(),
            )
            return None
        return lamp_record(report)

    def _emit(self, raw: RawEvent) -> None:
        if raw.type == "door_opened" and raw.compartment is not None:
            latched = raw.compartment in self.tracker.held_by_faults()
            self.offline.door_opened(raw.compartment, fault_latched=latched)
        holds = raw.type == "fault_raised" and raw.data.get("fault") != JAMMED
        if holds and raw.compartment is not None:
            self.offline.fault_seen(raw.compartment)  # her food is held for staff (ADR 0128)
        event = Event(
            event_id=uuid.uuid4().hex,
            type=raw.type,
            compartment=raw.compartment,
            data=raw.data,
        )
        self.link.emit_event(event)

    def _ask_report(self, command: ReportStateCommand) -> None:
        """The kept events it asks for (`events_after`) go again from the outbox at once,
        board or not (docs/adr/0092), and so does the telemetry published after
        `readings_after` (docs/adr/0098); the status and snapshots at the end of a round of
        the board loop once they can go, after a new connection's fresh state (`_answer_reports`,
        docs/adr/0111)."""
        if command.args.events_after is not None:
            self.link.resend_after(command.args.events_after)
        if command.args.readings_after is not None:
            self.link.resend_telemetry_after(command.args.readings_after)
        self._reports.put(command)

    def _answer_reports(self) -> None:
        """`report_state` (docs/adr/0091), at the end of a round of the board loop: the status
        and every snapshot as the board was just read, published again, then `succeeded` (on
        the same connection, after them); with the board offline, the status (saying so), then
        `failed`."""
        reports: list[ReportStateCommand] = []
        with contextlib.suppress(queue.Empty):
            while True:
                reports.append(self._reports.get_nowait())
        now = datetime.now(UTC)
        live: list[ReportStateCommand] = []
        for report in reports:
            if report.expired(now):
                self._finish(report, "rejected", "expired while waiting for the board")
            else:
                live.append(report)
        if not live:
            return
        # Not connected, or this connection's fresh state waits for the old copies paho sends
        # again (docs/adr/0111): what the report publishes would not go, while its `succeeded`
        # would, ahead of the state it vouches for. Answered in a later round. (Lost after
        # this, the connection takes what was handed to paho along, in order, reply last.)
        went = self.link.state_published and self._publish_status()
        if went and self.info.online:
            for view in self.tracker.republish_all():
                went = self.link.publish_snapshot(_snapshot(view)) and went
        if not went:
            for report in live:
                self._reports.put(report)
            return
        for report in live:
            if self.info.online:
                self._finish(report, "succeeded")
            else:
                self._finish(report, "failed", "board offline")

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self._republish.is_set():
            self._republish.clear()
            for view in self.tracker.republish_all():
                self.link.publish_snapshot(_snapshot(view))
        cut_off = self._telemetry_cut_off()
        self.link.release_backlog(not cut_off)  # what was kept goes once back in touch
        if now >= self._next_telemetry:
            self._next_telemetry = now + self.settings.scaled(self.settings.telemetry_period_s)
            readings = [
                Reading(n=v.n, temp_c=v.temp_c, setpoint_c=v.setpoint_c, heater=v.heater_on)
                for v in sorted(self.tracker.views.values(), key=lambda v: v.n)
            ]
            if readings:
                telemetry = Telemetry(readings=readings)
                if cut_off:
                    self.link.keep_telemetry(telemetry)  # folded on disk: no hole in the record
                else:
                    self.link.publish_telemetry(telemetry)

    def _telemetry_cut_off(self) -> bool:
        """Readings are kept on disk rather than published: the broker is away, or the service
        is (`cut_off`, docs/adr/0077). A link that is down counts even for a kiosk the service
        never supplied (where `cut_off` says no): its QoS 0 readings would be lost."""
        return not self.link.connected.is_set() or self.cut_off()

    # -- command execution (board thread) -----------------------------------------------------

    def _execute(self, command: CompartmentCommand) -> None:
        if command.expired():
            self._finish(command, "rejected", "expired while waiting for the board")
            return
        if not self.info.online:
            self._finish(command, "failed", "board offline")
            return
        n = command.compartment
        if n > self.info.compartments:
            self._finish(
                command,
                "rejected",
                f"compartment {n} does not exist on this kiosk "
                f"({self.info.compartments} compartments)",
            )
            return
        try:
            if isinstance(command, UnlockCommand):
                self._unlock(command)
            elif isinstance(command, SetHeaterCommand):
                setpoint_c = command.args.setpoint_c
                setpoint_dc = None if setpoint_c is None else round(setpoint_c * 10)
                answer = self.board.set_heater(n, setpoint_dc)
                self.store.remember_setpoint(n, answer.setpoint_dc)
                self._finish(
                    command,
                    "succeeded",
                    data={
                        "setpoint_c": None
                        if answer.setpoint_dc is None
                        else answer.setpoint_dc / 10
                    },
                )
            elif isinstance(command, StartDisinfectionCommand):
                started = self.board.start_disinfect(n, command.args.duration_s)
                # Progress and the end of the cycle travel as snapshots and events, which
                # every replica and dashboard sees; the reply says the cycle is running.
                self._finish(
                    command, "succeeded", "cycle started", {"duration_s": started.duration_s}
                )
                fresh = self.board.status(n, 1)
                self._observe(fresh.boot_id, list(fresh.compartments))
            elif isinstance(command, AbortDisinfectionCommand):
                self.tracker.expect_abort(n, "aborted_by_command")
                aborted = self.board.abort_disinfect(n)
                self._finish(command, "succeeded", data={"remaining_s": aborted.remaining_s})
            elif isinstance(command, ClearFaultCommand):
                cleared = self.board.clear_fault(n)
                name = None if not cleared.cleared else cleared.cleared.name.lower()
                # A heater fault drops the setpoint: hold the food again at once.
                restored = self._restore_setpoints("a fault was cleared", only=n)
                self._finish(
                    command,
                    "succeeded",
                    data={"cleared": name, "setpoint_restored": bool(restored)},
                )
        except BoardRefused as exc:
            self._unlocks.pop(command.request_id, None)
            # Refused before acting (interlock, bad argument): rejected. A faulted compartment
            # is a failure of the equipment, which an operator has to see as such.
            status = "failed" if exc.answer.code is ErrorCode.FAULTED else "rejected"
            self._finish(
                command,
                status,
                str(exc),
                {"error": exc.answer.code.name.lower(), "error_detail": exc.answer.detail},
            )
        except BoardAnswerInvalid as exc:
            watch = self._unlocks.get(command.request_id)
            record = self.store.get_request(command.request_id)
            if record is not None and record.final:
                # The STATUS read after the answer: the answer stands (one final status).
                log.warning("%s %s, after its answer: %s", command.action, command.request_id, exc)
            elif isinstance(command, StartDisinfectionCommand):
                # The board answered, so the cycle may be running: judged by its next report.
                self._starts[command.request_id] = command
                log.warning("start %s: %s; judged by the board's state", command.request_id, exc)
            elif watch is None:
                self._finish(command, "failed", str(exc))
            else:
                # The board answered the UNLOCK, so it may have pulsed: "failed" would let the
                # service give the code back while the latch is open. The watch judges it by
                # what the polls show, as for an answer that was lost.
                watch.answered = True
                log.warning("unlock %s: %s; judged by the board's state", command.request_id, exc)
        except (BoardUnreachable, TransportError) as exc:
            # An unlock is judged by its watch (the lock may have moved); anything not yet
            # answered fails now. The loop then marks the board offline.
            record = self.store.get_request(command.request_id)
            if record is None or record.final:
                pass  # answered already (the STATUS read after the answer): the answer stands
            elif isinstance(command, StartDisinfectionCommand):
                # The frame may have reached the board: judged by its report once it is back.
                self._starts[command.request_id] = command
            elif command.request_id not in self._unlocks:
                self._finish(command, "failed", f"board unreachable: {exc}")
            raise

    def _unlock(self, command: UnlockCommand) -> None:
        n = command.compartment
        args = command.args
        watch = UnlockWatch.start(command, self.tracker.views.get(n))
        # Watched before the frame goes out: if the answer is lost, the board still shows
        # whether the lock moved, and the unlock is judged by that, never sent again.
        self._unlocks[command.request_id] = watch
        if args.override_cycle:
            self.tracker.expect_abort(n, "unlocked_by_command")
        hello = self.info.hello
        report = hello is not None and hello.protocol >= UNLOCK_REPORT_SINCE
        unlocked = self.board.unlock(n, args.pulse_ms, args.override_cycle, report)
        watch.answered = True
        # Look at once rather than at the next poll: a person is waiting at the door. A board
        # of revision 2 put its state in the answer. An older one, or a latch that had not
        # moved yet when the board answered, is asked with a STATUS.
        if unlocked.state is not None:
            self._observe(unlocked.state.boot_id, list(unlocked.state.compartments))
        if command.request_id in self._unlocks:
            answer = self.board.status(n, 1)
            self._observe(answer.boot_id, list(answer.compartments))

    def _check_unlocks(self) -> None:
        now = time.monotonic()
        for request_id, watch in list(self._unlocks.items()):
            view = self.tracker.views.get(watch.command.compartment)
            if view is not None and watch.effect_seen(view):
                del self._unlocks[request_id]
                self._finish(
                    watch.command,
                    "succeeded",
                    data={"lock_released": view.lock_released, "door_open": view.door_open},
                )
            elif now >= watch.deadline:
                del self._unlocks[request_id]
                if watch.answered:
                    self._finish(
                        watch.command,
                        "timed_out",
                        "the board took the unlock but showed neither the lock released "
                        "nor the door open in time",
                    )
                else:
                    self._finish(
                        watch.command,
                        "failed",
                        "no answer from the board, and no release or opening seen since",
                    )


def lamp_record(report: CycleReportAnswer) -> dict[str, Any]:
    """The board's cycle record as the contract's LampRecord: seconds, not tenths."""
    return {
        "duration_s": report.duration_ds / 10,
        "elapsed_s": report.elapsed_ds / 10,
        "lamp_on_s": report.lamp_on_ds / 10,
        "interruptions": report.interruptions,
        "dark": [
            {"at_s": i.at_ds / 10, "dark_s": i.dark_ds / 10} for i in report.first_interruptions
        ],
    }


def _snapshot(view: CompartmentView) -> CompartmentSnapshot:
    return CompartmentSnapshot.model_validate(
        {
            "n": view.n,
            "door_open": view.door_open,
            "lock_released": view.lock_released,
            "occupied": view.occupied,
            "heater_on": view.heater_on,
            "uv_on": view.uv_on,
            "disinfecting": view.disinfecting,
            "disinfect_remaining_s": view.remaining_s,
            "temp_c": view.temp_c,
            "setpoint_c": view.setpoint_c,
            "fault": view.fault_name,
            "ts": datetime.fromtimestamp(view.seen_at, UTC),
        }
    )


def _short_errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in exc.errors()
    )[:500]
