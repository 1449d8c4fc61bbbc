"""One driver API over every backend: ``Npu(config, backend).run(program) -> Result``."""
from __future__ import annotations

from opennpu.config import NpuConfig
from opennpu.golden.deps import check_program
from opennpu.golden.model import GoldenNpu
from opennpu.golden.program import Program, Result

__all__ = ["BACKENDS", "BackendUnavailable", "Npu"]

BACKENDS = ("golden", "pysim", "verilator", "uart")


class BackendUnavailable(RuntimeError):
    """The backend exists in the API but cannot run here (not built yet, or a tool is missing)."""


class Npu:
    """An NPU instance on a backend. Every ``run`` starts from reset.

    Parameters
    ----------
    config : NpuConfig
    backend : ``"golden"`` (numpy model), ``"pysim"`` (Amaranth simulator), ``"verilator"`` or ``"uart"``
        (a board running ``hdl/board_top.py``, through ``sim/uart_host.py``).
    backpressure : int or None
        RTL backends: seed for random valid/ready gaps on every stream (None: none).
    vcd, gtkw : str or None
        RTL backends: write a waveform (and a GTKWave save file).
    fst : str or None
        Verilator backend: write an FST waveform (instead of ``vcd``).
    port, baud : str, int
        uart backend: the board's serial port (e.g. ``/dev/ttyUSB0``) and line rate.
    """

    def __init__(self, config: NpuConfig, backend: str = "golden", *, backpressure: int | None = None,
                 vcd: str | None = None, gtkw: str | None = None, fst: str | None = None,
                 port: str | None = None, baud: int = 115_200):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        if backend == "golden" and (vcd or fst or backpressure is not None):
            raise ValueError("the golden backend has no waveforms or stream back-pressure")
        if fst and backend != "verilator":
            raise ValueError("FST waveforms need the verilator backend (Amaranth's simulator writes VCD)")
        if backend == "uart" and (port is None or vcd or fst or backpressure is not None):
            raise ValueError("the uart backend needs port=... and has no waveforms or back-pressure")
        self.config, self.backend = config, backend
        if backend == "uart":
            self._options = dict(port=port, baud=baud)
            return
        self._options = dict(backpressure=backpressure, vcd=vcd, gtkw=gtkw)
        if fst:
            self._options["fst"] = fst

    def run(self, program: Program) -> Result:
        """Run ``program`` from reset. A program whose ``wait`` tokens leave a hazard unordered is refused
        before anything runs (``golden.deps.HazardError``, naming both commands)."""
        if self.backend == "golden":
            return GoldenNpu(self.config).run(program)       # (checks the tokens as it goes)
        check_program(program, self.config)
        if self.backend == "uart":
            from .uart_host import run_uart
            return run_uart(self.config, program, **self._options)
        if self.backend == "pysim":
            from .pysim import run_pysim
            return run_pysim(self.config, program, **self._options)
        from .verilator import run_verilator
        return run_verilator(self.config, program, **self._options)
