"""CPU cost of a running simulator: 48 compartments at time scale 120, idle and polled.

The simulator shares two cores with everything else, so it must stay light. This measures the
process CPU time over a wall-clock window for:

- baseline: the same window with no simulator (the measuring loop itself);
- polled: a 48-compartment bank at time scale 120, every heater holding 65 °C, a master
  polling STATUS (two pages) every 100 ms over a real pty, as the bridge does;
- idle: the same bank with nobody talking.

    /work/venv/bin/python bench/thermal/simulator_cpu.py [window_s]
"""

from __future__ import annotations

import sys
import threading
import time

import serial

from hardware.protocol import Frame, FrameDecoder, FrameType, encode_frame
from hardware.protocol.messages import Command, SetHeaterRequest, StatusRequest
from hardware.simulator import Simulator

COMPARTMENTS = 48
TIME_SCALE = 120.0
POLL_PERIOD_S = 0.1


def _cpu_over(window_s: float) -> float:
    start_cpu, start = time.process_time(), time.monotonic()
    time.sleep(window_s)
    return (time.process_time() - start_cpu) / (time.monotonic() - start)


def _exchange(port: serial.Serial, decoder: FrameDecoder, frame: Frame) -> Frame | None:
    port.write(encode_frame(frame))
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        frames = decoder.feed(port.read(max(1, port.in_waiting)))
        if frames:
            return frames[0]
    return None


def main() -> int:
    window_s = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    baseline = _cpu_over(window_s)
    with Simulator(compartments=COMPARTMENTS, seed=1, time_scale=TIME_SCALE) as sim:
        board_path, _ = sim.open_pty()
        port = serial.Serial(board_path, 115200, timeout=0.01)
        decoder = FrameDecoder()
        for n in range(1, COMPARTMENTS + 1):
            request = SetHeaterRequest(n, 650).pack()
            _exchange(port, decoder, Frame(1, FrameType.REQ, n, Command.SET_HEATER, request))
        stop = threading.Event()
        latencies: list[float] = []

        def poll() -> None:
            seq = 0
            while not stop.is_set():
                for first in (1, 25):
                    seq = (seq + 1) & 0xFF
                    request = StatusRequest(first, 24).pack()
                    t0 = time.perf_counter()
                    answer = _exchange(
                        port, decoder, Frame(1, FrameType.REQ, seq, Command.STATUS, request)
                    )
                    if answer is not None:
                        latencies.append(time.perf_counter() - t0)
                time.sleep(POLL_PERIOD_S)

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(window_s)  # warm-up: the heaters reach their setpoint
        polled = _cpu_over(window_s)
        truth = sim.truth()
        stop.set()
        poller.join()
        port.close()
        # Nobody talking: the board holds on until the heater lease runs out.
        idle = _cpu_over(window_s)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000 if latencies else float("nan")
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")
    held = sum(1 for c in truth.compartments if abs(c.air_temp_c - 65.0) < 1.0)
    print(
        f"simulator CPU, {COMPARTMENTS} compartments, time scale {TIME_SCALE:g}, "
        f"{window_s:g} s windows"
    )
    print(f"{'case':<40}{'CPU of one core':>16}")
    print(f"{'baseline (no simulator)':<40}{baseline * 100:>15.1f}%")
    print(f"{'polled over a pty every 100 ms, holding':<40}{polled * 100:>15.1f}%")
    print(f"{'idle, no master':<40}{idle * 100:>15.1f}%")
    print(f"STATUS round trip over the pty: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({len(latencies)})")
    print(f"simulated {truth.sim_time_s:.0f} s; compartments within 1 K of 65 °C: {held}/48")
    return 0


if __name__ == "__main__":
    sys.exit(main())
