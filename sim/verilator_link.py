"""The NPU behind the real host link (``hdl/board_top.LinkNpu``) on Verilator, at byte level.

``build_link_harness(config, frame_max=..., timeout=...)`` builds ``LinkNpu`` (``NpuTop`` behind
``HostLink``) with ``verilator_link_tb.v`` and ``verilator_link_harness.cpp`` through the cache of
``sim/verilator.py`` (same locking, keys and repair; the key adds the link parameters and this file).
Only the UART's bit timing is bypassed: the harness feeds the link's receive stream at most one byte
per ``byte_cycles`` and lets its transmitter send at most one byte per ``byte_cycles``, like a UART
at ``divisor = byte_cycles / 10``.

``VerilatorLink`` is a link for ``sim/uart_host.UartHost`` (``write``, ``read(timeout)``,
``monotonic``): the simulation advances only inside ``read``, by at most ``timeout`` seconds of
simulated time (``clk_hz``), so the driver's timeouts mean what they mean on a board, and a run is
deterministic. No thread: the driver calls the model directly.
"""
from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from opennpu.config import NpuConfig
from opennpu.golden.program import Program, Result

from . import verilator as vl
from .driver import BackendFailed
from .uart_host import UartHost

__all__ = ["LINK_HARNESS_SOURCE", "LINK_WRAPPER_SOURCE", "link_kind", "build_link_harness", "VerilatorLink",
           "run_link_verilator"]

LINK_HARNESS_SOURCE = Path(__file__).with_name("verilator_link_harness.cpp")
LINK_WRAPPER_SOURCE = Path(__file__).with_name("verilator_link_tb.v")
_REPLY = struct.Struct("<QIBI")


def link_kind(frame_max: int, timeout: int) -> vl.HarnessKind:
    """The ``HarnessKind`` of ``LinkNpu(config, frame_max=frame_max, timeout=timeout)``."""

    def export(config: NpuConfig, directory: Path):
        from amaranth.back import verilog
        from amaranth.hdl import Fragment, ValueCastable

        from opennpu.hdl.board_top import LinkNpu
        from opennpu.hdl.controller import check_rtl_config
        check_rtl_config(config)
        top = LinkNpu(config, frame_max=frame_max, timeout=timeout)
        ports = [value.as_value() if isinstance(value, ValueCastable) else value
                 for _, _, value in top.signature.flatten(top)]
        text, _ = verilog.convert_fragment(Fragment.get(top, None), ports, vl.TOP_NAME, emit_src=False)
        vl.write_export(directory, text, {})

    return vl.HarnessKind(name=f"link frame_max={frame_max} timeout={timeout}", export=export,
                          sources=(LINK_WRAPPER_SOURCE, LINK_HARNESS_SOURCE), top_module="opennpu_link_tb",
                          defines=lambda config: {"-D": {"OPENNPU_LINK_HARNESS": 1}, "-G": {}}, digest_files=(Path(__file__),))


def build_link_harness(config: NpuConfig, *, frame_max: int = 16, timeout: int = 768) -> Path:
    """Path of the byte-level link harness for ``config`` (built and cached on first use)."""
    return vl.build_harness(config, kind=link_kind(frame_max, timeout))


class VerilatorLink:
    """The host side of the verilated ``LinkNpu``'s byte streams (a ``UartHost`` link).

    ``byte_cycles``: cycles per byte each way (10 bit times of a UART); ``clk_hz``: the simulated
    clock, for ``monotonic()``. ``max_cycles``: a hard limit on simulated cycles; past it ``read``
    raises ``LinkHang`` (the driver failed to stop by itself).
    """

    def __init__(self, exe: Path, *, byte_cycles: int = 12, clk_hz: float = 12e6, max_cycles: int | None = None):
        self.byte_cycles, self.clk_hz, self.max_cycles = byte_cycles, clk_hz, max_cycles
        self._proc = subprocess.Popen([str(exe), str(byte_cycles)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._out = bytearray()
        self.cycle = 0
        self.idle = True
        self.bytes_to_device = self.bytes_from_device = 0

    def monotonic(self) -> float:
        return self.cycle / self.clk_hz

    def write(self, data: bytes):
        self._out += data
        self.bytes_to_device += len(data)

    def step(self, cycles: int, quiet: int = 0) -> bytes:
        """Deliver what was written, run up to ``cycles`` cycles (less once bytes came and the line
        was quiet for ``quiet`` cycles); returns the bytes the device sent."""
        if self.max_cycles is not None and self.cycle >= self.max_cycles:
            raise LinkHang(f"no end after {self.cycle} simulated cycles")
        request = b"R" + struct.pack("<QQI", max(0, int(cycles)), quiet, len(self._out)) + bytes(self._out)
        self._out.clear()
        try:
            self._proc.stdin.write(request)
            self._proc.stdin.flush()
            head = self._read_exact(_REPLY.size)
        except (BrokenPipeError, EOFError) as error:
            raise BackendFailed(f"the link harness died (exit {self._proc.poll()})") from error
        self.cycle, _, idle, n = _REPLY.unpack(head)
        self.idle = bool(idle)
        data = self._read_exact(n)
        self.bytes_from_device += n
        return data

    def read(self, timeout: float) -> bytes:
        cycles = max(1, int(timeout * self.clk_hz))
        return self.step(cycles, quiet=3 * self.byte_cycles)

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self._proc.stdout.read(n - len(data))
            if not chunk:
                raise EOFError("link harness closed its output")
            data += chunk
        return data

    def close(self):
        if self._proc.poll() is None:
            try:
                self._proc.stdin.write(b"X")
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LinkHang(BaseException):
    """A run went past the campaign's hard limit: the driver neither finished nor raised.

    A ``BaseException`` so that no ``except Exception`` (or ``LinkError``) in the driver swallows it."""


def host_timeouts(byte_cycles: int, clk_hz: float) -> dict:
    """``UartHost`` options scaled to the link's byte time: resend after 400 byte times of silence."""
    return {"timeout": 400 * byte_cycles / clk_hz}


def run_link_verilator(config: NpuConfig, program: Program, *, frame_max: int = 16, byte_cycles: int = 12,
                       clk_hz: float = 12e6, link_wrapper=None, host_out=None, **host_options) -> Result:
    """Run ``program`` through ``UartHost`` on the verilated ``LinkNpu``; ``link_wrapper(link)`` may
    put a fault injector between them. ``host_out`` receives the ``UartHost`` under ``"host"``."""
    exe = build_link_harness(config, frame_max=frame_max, timeout=64 * byte_cycles)
    with VerilatorLink(exe, byte_cycles=byte_cycles, clk_hz=clk_hz,
                       max_cycles=host_options.pop("max_cycles", None)) as raw:
        link = link_wrapper(raw) if link_wrapper else raw
        options = host_timeouts(byte_cycles, clk_hz) | host_options
        host = UartHost(config, link, **options)
        if host_out is not None:
            host_out["host"] = host
        return host.run(program)
