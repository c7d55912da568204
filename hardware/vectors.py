"""The test vectors of hardware/PROTOCOL.md: one scripted session with a fresh board.

PROTOCOL.md is the one home of the vectors: the conformance tests parse its `vectors` block and
replay every request's wire bytes through a serial port, expecting the answer bytes written
there. This module writes that block (`python -m hardware.vectors --write`) by running the
session on a simulator with a manual clock, so the bytes are exact and repeatable.

Block syntax, one item per line:
    # comment (the decoded frame, what the step shows)
    ! directive       the world or the clock changes (see `apply_directive`)
    > hex bytes       a request, as sent on the wire (COBS, with the 0x00 delimiter)
    < hex bytes       the answer expected on the wire, or `< none` when the board stays silent
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import serial

from hardware.protocol import Frame, FrameDecoder, FrameType, decode_frame, encode_frame
from hardware.protocol.messages import (
    Command,
    CompartmentRequest,
    Empty,
    ErrorAnswer,
    SetHeaterRequest,
    StartDisinfectRequest,
    StatusRequest,
    UnlockRequest,
)
from hardware.simulator import Simulator

PROTOCOL_MD = Path(__file__).with_name("PROTOCOL.md")
BEGIN, END = "<!-- vectors:begin -->", "<!-- vectors:end -->"
SESSION = {"compartments": 4, "seed": 2026, "node_address": 1}
SILENCE_S = 0.3  # how long a tester waits before concluding the board will not answer


@dataclass(frozen=True)
class Step:
    title: str
    request: Frame | bytes | None = None  # bytes: raw wire bytes (a damaged frame)
    directive: str | None = None


def _req(seq: int, cmd: int, payload: bytes = b"", addr: int = 1) -> Frame:
    return Frame(addr, FrameType.REQ, seq, cmd, payload)


def _damaged_hello() -> bytes:
    wire = bytearray(encode_frame(_req(0x20, Command.HELLO)))
    wire[-2] ^= 0x01  # one bit of the CRC flipped
    return bytes(wire)


SCRIPT: list[Step] = [
    Step("HELLO: protocol 3, firmware 1.2.0, boot id, 4 compartments, lease 600 s",
         _req(0x01, Command.HELLO, Empty().pack())),
    Step("STATUS of compartments 1-4 (count 0 = as many as fit)",
         _req(0x02, Command.STATUS, StatusRequest(1, 0).pack())),
    Step("SET_HEATER compartment 1 to 65.0 °C (0x028A tenths)",
         _req(0x03, Command.SET_HEATER, SetHeaterRequest(1, 650).pack())),
    Step("UNLOCK compartment 2, 500 ms pulse",
         _req(0x04, Command.UNLOCK, UnlockRequest(2, 500).pack())),
    Step("the same UNLOCK again, same seq and bytes (a retry): the cached answer, no 2nd pulse",
         _req(0x04, Command.UNLOCK, UnlockRequest(2, 500).pack())),
    Step("the courier opens door 2, puts a 450 g meal at 70 °C in, shuts it",
         directive="open_door 2"),
    Step("", directive="place_item 2 450 70"),
    Step("", directive="close_door 2"),
    Step("5 s pass: the control loop runs five times", directive="advance 5"),
    Step("STATUS of 1-2: heater on in 1; door 2 opened and shut once (latched counters)",
         _req(0x05, Command.STATUS, StatusRequest(1, 2).pack())),
    Step("START_DISINFECT compartment 3 for 1800 s",
         _req(0x06, Command.START_DISINFECT, StartDisinfectRequest(3, 1800).pack())),
    Step("UNLOCK 3 during its cycle, no override: INTERLOCK_REFUSED (3), detail compartment 3",
         _req(0x07, Command.UNLOCK, UnlockRequest(3, 500).pack())),
    Step("60 s pass", directive="advance 60"),
    Step("STATUS of 3: UV on, disinfecting, 1740 s left",
         _req(0x08, Command.STATUS, StatusRequest(3, 1).pack())),
    Step("UNLOCK 3 with the override flag: the cycle is aborted, the lock released",
         _req(0x09, Command.UNLOCK, UnlockRequest(3, 500, override_cycle=True).pack())),
    Step("START_DISINFECT 3 with its lock released: INTERLOCK_REFUSED",
         _req(0x0A, Command.START_DISINFECT, StartDisinfectRequest(3, 600).pack())),
    Step("ABORT_DISINFECT 3 with no cycle running: answered, 0 s were left",
         _req(0x0B, Command.ABORT_DISINFECT, CompartmentRequest(3).pack())),
    Step("the probe of compartment 4 breaks (open wire); 1 s passes", directive="sensor 4 open"),
    Step("", directive="advance 1"),
    Step("SET_HEATER 4 to 65.0 °C: FAULTED (4), detail fault SENSOR_OPEN (1)",
         _req(0x0C, Command.SET_HEATER, SetHeaterRequest(4, 650).pack())),
    Step("CLEAR_FAULT 4 while the wire is still open: FAULTED, detail SENSOR_OPEN",
         _req(0x0D, Command.CLEAR_FAULT, CompartmentRequest(4).pack())),
    Step("the probe is mended", directive="sensor 4 none"),
    Step("CLEAR_FAULT 4: cleared SENSOR_OPEN",
         _req(0x0E, Command.CLEAR_FAULT, CompartmentRequest(4).pack())),
    Step("command 0x42 does not exist: UNKNOWN_COMMAND (1), detail the command",
         _req(0x0F, 0x42)),
    Step("SET_HEATER 1 to 90.0 °C, over the 75.0 °C maximum: BAD_ARGUMENT (2), detail 1",
         _req(0x10, Command.SET_HEATER, bytes([1, 0x03, 0x84]))),
    Step("UNLOCK compartment 9 of a 4-compartment bank: BAD_ARGUMENT, detail 9",
         _req(0x11, Command.UNLOCK, UnlockRequest(9, 500).pack())),
    Step("STATUS starting at 5: BAD_ARGUMENT, detail 5",
         _req(0x12, Command.STATUS, StatusRequest(5, 1).pack())),
    Step("UNLOCK with a 10 ms pulse (under 50 ms): BAD_ARGUMENT, detail 1",
         _req(0x13, Command.UNLOCK, bytes([1, 0x00, 0x0A, 0x00]))),
    Step("seq 0x10 again but different bytes: not a retry, executed (heater 1 off)",
         _req(0x10, Command.SET_HEATER, SetHeaterRequest(1, None).pack())),
    Step("a request for node 2: node 1 stays silent",
         _req(0x14, Command.HELLO, addr=2)),
    Step("a HELLO with one CRC bit flipped: dropped, no answer", _damaged_hello()),
    Step("STATUS of 1-4 at the end",
         _req(0x15, Command.STATUS, StatusRequest(1, 4).pack())),
    Step("UNLOCK 1, 300 ms, with the REPORT flag (revision 2): the answer carries compartment "
         "1's state (boot id, board flags, first 1, count 1, one record): lock released",
         _req(0x16, Command.UNLOCK, UnlockRequest(1, 300, report=True).pack())),
    Step("CYCLE_REPORT 2 (revision 3), no cycle since boot: cycle 0, state 0 none, all zero",
         _req(0x17, Command.CYCLE_REPORT, CompartmentRequest(2).pack())),
    Step("CYCLE_REPORT 3: cycle 1, state 3 aborted (step 13) after 60.0 s of its 1800.0 s, "
         "lamp lit all 60.0 s, no interruption",
         _req(0x18, Command.CYCLE_REPORT, CompartmentRequest(3).pack())),
    Step("START_DISINFECT compartment 4 for 60 s",
         _req(0x19, Command.START_DISINFECT, StartDisinfectRequest(4, 60).pack())),
    Step("20 s pass", directive="advance 20"),
    Step("CYCLE_REPORT 4: cycle 1, state 1 running, 600 ds asked, 200 ds run, 200 ds lit",
         _req(0x1A, Command.CYCLE_REPORT, CompartmentRequest(4).pack())),
    Step("the UV-C tube of 4 stops emitting for 15 s, then shines again; 30 s pass, the cycle "
         "runs out 25 s into them",
         directive="dead_lamp 4 on"),
    Step("", directive="advance 15"),
    Step("", directive="dead_lamp 4 off"),
    Step("", directive="advance 30"),
    Step("CYCLE_REPORT 4: state 2 ran out, 600 ds run, 450 ds lit, 1 interruption: dark at "
         "200 ds for 150 ds",
         _req(0x1B, Command.CYCLE_REPORT, CompartmentRequest(4).pack())),
    Step("CYCLE_REPORT with no compartment (empty payload): BAD_ARGUMENT, detail 0",
         _req(0x1C, Command.CYCLE_REPORT)),
    Step("CYCLE_REPORT 5 of a 4-compartment bank: BAD_ARGUMENT, detail 5",
         _req(0x1D, Command.CYCLE_REPORT, CompartmentRequest(5).pack())),
]  # fmt: skip


def apply_directive(sim: Simulator, directive: str) -> None:
    """Carry out one `!` line: open_door N [force] | close_door N | place_item N MASS TEMP |
    remove_item N | sensor N open|short|none | jam_lock N on|off | dead_lamp N on|off |
    advance SECONDS."""
    verb, *args = directive.split()
    match verb, args:
        case "open_door", [n]:
            sim.world.open_door(int(n))
        case "open_door", [n, "force"]:
            sim.world.open_door(int(n), force=True)
        case "close_door", [n]:
            sim.world.close_door(int(n))
        case "place_item", [n, mass, temp]:
            sim.world.place_item(int(n), float(mass), float(temp))
        case "remove_item", [n]:
            sim.world.remove_item(int(n))
        case "sensor", [n, mode] if mode in ("open", "short"):
            sim.faults.sensor(int(n), "open" if mode == "open" else "short")
        case "sensor", [n, "none"]:
            sim.faults.sensor(int(n), None)
        case "jam_lock", [n, state] if state in ("on", "off"):
            sim.faults.jam_lock(int(n), state == "on")
        case "dead_lamp", [n, state] if state in ("on", "off"):
            sim.faults.dead_lamp(int(n), state == "on")
        case "advance", [seconds]:
            sim.advance(float(seconds))
        case _:
            raise ValueError(f"unknown directive {directive!r}")


def session_simulator() -> Simulator:
    return Simulator(**SESSION, manual_clock=True)  # type: ignore[arg-type]


def _hex(data: bytes) -> str:
    return data.hex(" ").upper()


def _describe(frame: Frame) -> str:
    addr = frame.addr | (0x80 if frame.is_answer else 0)
    head = (
        f"ver 01 | addr {addr:02X} | type {int(frame.type):02X} {frame.type.name} | "
        f"seq {frame.seq:02X} | cmd {frame.cmd:02X} | len {len(frame.payload):02X}"
    )
    body = f" | payload {_hex(frame.payload)}" if frame.payload else ""
    if frame.type is FrameType.ERR:
        err = ErrorAnswer.unpack(frame.payload)
        body += f" ({err.code.name}, detail {err.detail})"
    crc = encode_frame(frame)
    return head + body + f" | crc {_crc_hex(crc)}"


def _crc_hex(wire: bytes) -> str:
    from cobs import cobs

    raw = cobs.decode(wire[:-1])
    return _hex(raw[-2:])


def exchange(port: serial.Serial, wire: bytes, silence_s: float = SILENCE_S) -> bytes | None:
    """Send `wire`, return the answer's wire bytes (with its 0x00), None if none came."""
    port.reset_input_buffer()
    port.write(wire)
    decoder = FrameDecoder()
    got = bytearray()
    deadline = time.monotonic() + silence_s
    while time.monotonic() < deadline:
        chunk = port.read(max(1, port.in_waiting))
        got += chunk
        if decoder.feed(chunk):
            return bytes(got)
    return None


def render() -> str:
    lines = ["```vectors"]
    with session_simulator() as sim:
        port = serial.serial_for_url(sim.board_url, timeout=0.02)
        number = 0
        for step in SCRIPT:
            if step.title:
                number += 1
                lines.append(f"# {number}. {step.title}")
            if step.directive is not None:
                apply_directive(sim, step.directive)
                lines.append(f"! {step.directive}")
                continue
            assert step.request is not None
            wire = step.request if isinstance(step.request, bytes) else encode_frame(step.request)
            if isinstance(step.request, Frame):
                lines.append(f"#    request: {_describe(step.request)}")
            answer = exchange(port, wire)
            lines.append(f"> {_hex(wire)}")
            if answer is None:
                lines.append("< none")
            else:
                frame = decode_frame(answer[:-1])
                assert frame is not None
                lines.append(f"#    answer:  {_describe(frame)}")
                lines.append(f"< {_hex(answer)}")
            lines.append("")
        port.close()
    if lines[-1] == "":
        lines.pop()
    lines.append("```")
    return "\n".join(lines)


def parse(markdown: str) -> list[tuple[str, str]]:
    """The `vectors` block of `markdown` as (kind, text) items: kind is '!', '>' or '<'."""
    match = re.search(r"```vectors\n(.*?)```", markdown, re.S)
    if match is None:
        raise ValueError("no ```vectors block")
    items = []
    for line in match.group(1).splitlines():
        line = line.strip()
        if line and line[0] in "!><":
            items.append((line[0], line[1:].strip()))
    return items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", action="store_true", help="rewrite the block in PROTOCOL.md")
    args = parser.parse_args()
    block = render()
    if not args.write:
        print(block)
        return 0
    text = PROTOCOL_MD.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    PROTOCOL_MD.write_text(text[:start] + "\n" + block + "\n" + text[end:])
    print(f"wrote {len(SCRIPT)} steps to {PROTOCOL_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
