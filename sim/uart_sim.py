"""The board design (``hdl/board_top.UartNpu``) in Amaranth's simulator, driven through its serial lines.

``SimSerialLink`` is a link for ``UartHost`` whose bytes travel bit by bit over the simulated ``rx`` /
``tx`` lines (8N1, ``divisor`` cycles per bit). The host driver runs in a thread; the simulation runs
in the calling thread and advances the clock until the driver is done. Time on the link is simulated
time (``monotonic()``), so the driver's timeouts mean the same as on a board.
"""
from __future__ import annotations

import threading
from collections import deque

from amaranth.sim import Simulator

from opennpu.config import NpuConfig
from opennpu.golden.program import Program, Result
from opennpu.hdl.board_top import UartNpu

from .uart_host import UartHost

__all__ = ["SimSerialLink", "run_uart_pysim"]


class SimSerialLink:
    """Host side of a simulated serial line; ``bridge`` is the testbench that drives the device pins."""

    def __init__(self, divisor: int, clk_hz: float, *, corrupt: set[int] = frozenset()):
        self.divisor, self.clk_hz = divisor, clk_hz
        self.corrupt = set(corrupt)           # indices of host -> device bytes sent with bit 0 flipped
        self._cond = threading.Condition()
        self._to_device: deque[int] = deque()
        self._from_device = bytearray()
        self._cycle = 0
        self.done = False
        self.error: BaseException | None = None
        self.bytes_to_device = self.bytes_from_device = 0

    # -- host side (UartHost's thread) -------------------------------------------------------------
    def monotonic(self) -> float:
        return self._cycle / self.clk_hz

    def write(self, data: bytes):
        with self._cond:
            self._to_device.extend(data)

    def read(self, timeout: float) -> bytes:
        deadline = self._cycle + timeout * self.clk_hz
        with self._cond:
            while not self._from_device and self._cycle < deadline and not self.done:
                self._cond.wait(0.005)
            out = bytes(self._from_device)
            self._from_device.clear()
        return out

    # -- device side (the simulator's thread) ------------------------------------------------------
    async def bridge(self, ctx, rx_pin, tx_pin):
        """Testbench: serialises host bytes onto ``rx_pin``, deserialises ``tx_pin`` for the host."""
        div = self.divisor
        send_bits, send_left = [], 0          # levels still to drive on rx, cycles left for the current one
        recv_timer, recv_bits, recv_state = 0, [], "idle"
        ctx.set(rx_pin, 1)
        while not self.done:
            # host -> device
            if send_left == 0:
                if send_bits:
                    ctx.set(rx_pin, send_bits.pop(0))
                    send_left = div
                elif self._to_device:
                    with self._cond:
                        byte = self._to_device.popleft()
                    if self.bytes_to_device in self.corrupt:
                        byte ^= 1
                    self.bytes_to_device += 1
                    send_bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
                    ctx.set(rx_pin, send_bits.pop(0))
                    send_left = div
            send_left = max(0, send_left - 1)
            # device -> host: sample in the middle of each bit
            level = ctx.get(tx_pin)
            if recv_state == "idle":
                if not level:
                    recv_state, recv_timer, recv_bits = "bits", div + div // 2, []
            else:
                recv_timer -= 1
                if recv_timer == 0:
                    if len(recv_bits) < 8:
                        recv_bits.append(level)
                        recv_timer = div
                    else:                      # stop bit
                        if level:
                            with self._cond:
                                self._from_device.append(sum(b << i for i, b in enumerate(recv_bits)))
                                self._cond.notify_all()
                            self.bytes_from_device += 1
                        recv_state = "idle"
            await ctx.tick()
            self._cycle += 1


def run_uart_pysim(config: NpuConfig, program: Program, *, divisor: int = 4, clk_hz: float = 12e6,
                   frame_max: int = 64, vcd: str | None = None, corrupt=frozenset(), host_out=None,
                   **host_options) -> Result:
    """Run ``program`` through the simulated UART link from reset; the same ``Result`` as every backend.

    ``frame_max`` is small by default so that programs span several frames. ``corrupt``: indices of
    host -> device bytes to damage on the line (one flipped bit each). ``host_out``: a dict that
    receives the ``UartHost`` (its ``last_status`` holds the final STATUS reply).
    """
    dut = UartNpu(config, divisor=divisor, frame_max=frame_max)
    link = SimSerialLink(divisor, clk_hz, corrupt=corrupt)
    host_options.setdefault("timeout", 2000 * 10 * divisor / clk_hz)      # 2000 byte times
    host = UartHost(config, link, **host_options)
    if host_out is not None:
        host_out["host"] = host
    result = {}

    def host_thread():
        try:
            result["value"] = host.run(program)
        except BaseException as error:          # re-raised in the caller's thread
            link.error = error
        finally:
            link.done = True

    async def bridge(ctx):
        await link.bridge(ctx, dut.rx, dut.tx)

    sim = Simulator(dut)
    sim.add_clock(1 / clk_hz)
    sim.add_testbench(bridge)
    thread = threading.Thread(target=host_thread, daemon=True)
    thread.start()
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    thread.join()
    if link.error is not None:
        raise link.error
    return result["value"]
