"""Board client: stop-and-wait requests to one node on the line, with retries and typed calls.

The bridge is the only master. Each request carries an 8-bit sequence number; a retry reuses it,
so a board that already executed the request answers from its cache instead of executing it
again (no double unlock pulse). The answer deadline is derived from the baud rate
(`hardware.protocol.messages.answer_deadline_s`) plus a margin for the host's scheduling.
After `RETRIES` retries without an answer the request fails with `BoardUnreachable`.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Protocol, Self, TypeVar

from firmware_bridge.transport import SerialTransport
from hardware.protocol import (
    Command,
    ErrorAnswer,
    Frame,
    FrameDecoder,
    FrameType,
    HelloAnswer,
    PayloadError,
    StatusAnswer,
    StatusRequest,
    encode_frame,
)
from hardware.protocol.messages import (
    AbortDisinfectAnswer,
    ClearFaultAnswer,
    CompartmentRequest,
    CycleReportAnswer,
    SetHeaterAnswer,
    SetHeaterRequest,
    StartDisinfectAnswer,
    StartDisinfectRequest,
    UnlockAnswer,
    UnlockRequest,
    answer_deadline_s,
)

log = logging.getLogger(__name__)


class _Unpackable(Protocol):
    @classmethod
    def unpack(cls, payload: bytes) -> Self: ...


_A = TypeVar("_A", bound=_Unpackable)

RETRIES = 3  # PROTOCOL.md section 3: after 3 failed retries the node is offline


class BoardError(Exception):
    """A request that did not produce a usable answer."""


class BoardUnreachable(BoardError):
    """No valid answer after every retry: line cut, board off, or too many corrupted frames."""


class BoardRefused(BoardError):
    """The board answered with an error frame."""

    def __init__(self, command: Command, answer: ErrorAnswer) -> None:
        super().__init__(f"{command.name} refused: {answer.code.name.lower()} ({answer.detail})")
        self.command = command
        self.answer = answer


class BoardAnswerInvalid(BoardError):
    """The answer frame was intact but its payload did not parse."""


@dataclass(slots=True)
class LinkStats:
    requests: int = 0
    retries: int = 0
    unanswered: int = 0
    stale_answers: int = 0


class BoardClient:
    def __init__(
        self,
        transport: SerialTransport,
        address: int = 1,
        answer_margin_s: float = 0.02,
    ) -> None:
        self.transport = transport
        self.address = address
        self.answer_margin_s = answer_margin_s
        # A random first sequence number: a board still caching an answer from before this
        # bridge started must not mistake our first request for a retry of its last one.
        self._seq = random.randrange(256)
        self._decoder = FrameDecoder()
        self.stats = LinkStats()

    @property
    def frames_dropped(self) -> int:
        return self._decoder.dropped

    def reset_link(self) -> None:
        """Forget a half-received frame, e.g. after the port was reopened."""
        self._decoder = FrameDecoder()

    def request(self, command: Command, payload: bytes = b"") -> bytes:
        """Send one request and return the answer's payload; retries with the same seq."""
        self._seq = (self._seq + 1) & 0xFF
        wire = encode_frame(Frame(self.address, FrameType.REQ, self._seq, int(command), payload))
        deadline_s = answer_deadline_s(len(wire), self.transport.baud) + self.answer_margin_s
        self.stats.requests += 1
        for attempt in range(1 + RETRIES):
            if attempt:
                self.stats.retries += 1
                # One extra delimiter first: it closes a partial block noise may have left in
                # the board's decoder, so the retry decodes (PROTOCOL.md, Transactions).
                self.transport.write(b"\x00" + wire)
            else:
                self.transport.write(wire)
            answer = self._await_answer(command, time.monotonic() + deadline_s)
            if answer is None:
                continue
            if answer.type is FrameType.ERR:
                try:
                    raise BoardRefused(command, ErrorAnswer.unpack(answer.payload))
                except PayloadError as exc:
                    raise BoardAnswerInvalid(f"{command.name}: bad error frame: {exc}") from exc
            return answer.payload
        self.stats.unanswered += 1
        raise BoardUnreachable(
            f"{command.name} to node {self.address}: no answer after {RETRIES} retries"
        )

    def _await_answer(self, command: Command, deadline: float) -> Frame | None:
        while True:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                return None
            for frame in self._decoder.feed(self.transport.read(remaining_s)):
                if (
                    frame.is_answer
                    and frame.addr == self.address
                    and frame.seq == self._seq
                    and frame.cmd == int(command)
                ):
                    return frame
                # An answer to an earlier attempt, another node's answer or an echo: not ours.
                self.stats.stale_answers += 1

    # -- typed calls --------------------------------------------------------------------------

    def hello(self) -> HelloAnswer:
        return self._parse(HelloAnswer, Command.HELLO, self.request(Command.HELLO))

    def status(self, first: int = 1, count: int = 0) -> StatusAnswer:
        payload = self.request(Command.STATUS, StatusRequest(first, count).pack())
        return self._parse(StatusAnswer, Command.STATUS, payload)

    def unlock(
        self, n: int, pulse_ms: int, override_cycle: bool = False, report: bool = False
    ) -> UnlockAnswer:
        """`report` (boards of protocol revision 2): the answer carries the compartment's state."""
        request = UnlockRequest(n, pulse_ms, override_cycle, report)
        answer = self._parse(
            UnlockAnswer, Command.UNLOCK, self.request(Command.UNLOCK, request.pack())
        )
        if report and answer.state is None:
            raise BoardAnswerInvalid("UNLOCK: asked for the compartment's state, got none")
        return answer

    def set_heater(self, n: int, setpoint_dc: int | None) -> SetHeaterRequest:
        payload = self.request(Command.SET_HEATER, SetHeaterRequest(n, setpoint_dc).pack())
        return self._parse(SetHeaterAnswer, Command.SET_HEATER, payload)

    def start_disinfect(self, n: int, duration_s: int) -> StartDisinfectRequest:
        payload = self.request(Command.START_DISINFECT, StartDisinfectRequest(n, duration_s).pack())
        return self._parse(StartDisinfectAnswer, Command.START_DISINFECT, payload)

    def abort_disinfect(self, n: int) -> AbortDisinfectAnswer:
        payload = self.request(Command.ABORT_DISINFECT, CompartmentRequest(n).pack())
        return self._parse(AbortDisinfectAnswer, Command.ABORT_DISINFECT, payload)

    def clear_fault(self, n: int) -> ClearFaultAnswer:
        payload = self.request(Command.CLEAR_FAULT, CompartmentRequest(n).pack())
        return self._parse(ClearFaultAnswer, Command.CLEAR_FAULT, payload)

    def cycle_report(self, n: int) -> CycleReportAnswer:
        """The board's record of compartment n's last cycle (boards of protocol revision 3)."""
        payload = self.request(Command.CYCLE_REPORT, CompartmentRequest(n).pack())
        answer = self._parse(CycleReportAnswer, Command.CYCLE_REPORT, payload)
        if answer.compartment != n:
            raise BoardAnswerInvalid(f"CYCLE_REPORT of {n} answered for {answer.compartment}")
        return answer

    @staticmethod
    def _parse(kind: type[_A], command: Command, payload: bytes) -> _A:
        try:
            return kind.unpack(payload)
        except PayloadError as exc:
            raise BoardAnswerInvalid(f"{command.name}: {exc}") from exc
