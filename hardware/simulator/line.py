"""The board's serial line and its faults: corrupted bytes, pulled cables, and the other boards
hanging on the same RS-485 line.

Bytes from the host pass `board_bytes`: corrupted towards the board at the set rate, cut into
frames, answered by this board or one of its peers on the line, and the answers corrupted on the
way back. Cables are pulled here (when each comes back); the I/O loop takes the ports away.
"""

from __future__ import annotations

from typing import Literal

from hardware.physics import WorldError
from hardware.protocol import FrameDecoder, encode_frame
from hardware.simulator.state import BankState, SimulatorError

Device = Literal["board", "scanner"]
DEVICES: tuple[Device, ...] = ("board", "scanner")
LineDirection = Literal["both", "to_board", "from_board"]
LINE_DIRECTIONS: tuple[LineDirection, ...] = ("both", "to_board", "from_board")


class BoardLine:
    """The line between the host and this simulator's board (and any peers hung on it)."""

    def __init__(self, state: BankState) -> None:
        self._state = state
        self.error_rate = 0.0
        self.error_direction: LineDirection = "both"
        self.cable_back_at: dict[str, float] = {}  # device -> simulated time it is plugged again
        self.peers: list[BankState] = []  # other boards on this board line (RS-485)

    # ---- faults

    def set_errors(self, rate: float, direction: LineDirection) -> None:
        if not 0.0 <= rate <= 1.0:
            raise WorldError(f"line error rate {rate} out of 0-1")
        if direction not in LINE_DIRECTIONS:
            raise WorldError(f"no line direction {direction!r}")
        with self._state.lock:
            self.error_rate = rate
            self.error_direction = direction

    def pull_cable(self, device: Device, seconds: float) -> None:
        """Record that `device`'s cable is out for `seconds` of simulated time."""
        if seconds <= 0:
            raise WorldError("a cable is pulled for a positive number of seconds")
        if device not in DEVICES:
            raise WorldError(f"no device {device!r}: board or scanner")
        with self._state.lock:
            self.cable_back_at[device] = self._state.now_s() + seconds

    def cables_due(self) -> list[str]:
        """Devices whose cable is back by now (under the state's lock)."""
        now = self._state.now_s()
        return [d for d, t in self.cable_back_at.items() if t <= now]

    def cable_pulled(self, device: str) -> bool:
        return device in self.cable_back_at

    def plugged(self, device: str) -> None:
        with self._state.lock:
            self.cable_back_at.pop(device, None)

    def corrupt(self, data: bytes, towards: LineDirection) -> bytes:
        rate = self.error_rate
        if self.error_direction not in ("both", towards):
            return data
        if rate <= 0.0 or not data:
            return data
        out = bytearray(data)
        rng = self._state.rng
        for i in range(len(out)):
            if rng.random() < rate:
                out[i] ^= 1 << rng.randrange(8)
        return bytes(out)

    # ---- bytes in, answers out

    def board_bytes(self, decoder: FrameDecoder, data: bytes) -> bytes:
        state = self._state
        with state.lock:
            now = state.now_s()
            answers = bytearray()
            for frame in decoder.feed(self.corrupt(data, "to_board")):
                answer = state.board.handle(frame, now)
                for peer in self.peers:
                    if answer is not None:
                        break
                    answer = peer.hear(frame)
                if answer is not None:
                    answers += encode_frame(answer)
            return self.corrupt(bytes(answers), "from_board")

    def add_peer(self, peer: BankState, peer_line: BoardLine) -> None:
        """Hang `peer`'s board on this line; see `Simulator.share_line`."""
        if peer is self._state or peer_line.peers or self._state in peer_line.peers:
            raise SimulatorError("a line is shared by one host simulator and its peers")
        addresses = {self._state.board.node_address} | {p.board.node_address for p in self.peers}
        if peer.board.node_address in addresses:
            raise SimulatorError(f"node address {peer.board.node_address} is taken on this line")
        with self._state.lock:
            self.peers.append(peer)
