"""Locker bank serial protocol, version 1: the one frame codec and the payload layouts.

Pure code, no I/O: the simulator's firmware and the kiosk bridge both import it, so the two ends
of the serial line can never disagree about a byte. `hardware/PROTOCOL.md` is its specification.
"""

from hardware.protocol.frame import (
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    Frame,
    FrameDecoder,
    FrameType,
    decode_frame,
    encode_frame,
)
from hardware.protocol.messages import (
    BoardFlags,
    Command,
    CompartmentStatus,
    CycleReportAnswer,
    CycleState,
    ErrorAnswer,
    ErrorCode,
    FaultCode,
    HelloAnswer,
    LampInterruption,
    PayloadError,
    StatusAnswer,
    StatusRequest,
)

__all__ = [
    "MAX_PAYLOAD",
    "PROTOCOL_VERSION",
    "BoardFlags",
    "Command",
    "CompartmentStatus",
    "CycleReportAnswer",
    "CycleState",
    "ErrorAnswer",
    "ErrorCode",
    "FaultCode",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "HelloAnswer",
    "LampInterruption",
    "PayloadError",
    "StatusAnswer",
    "StatusRequest",
    "decode_frame",
    "encode_frame",
]
