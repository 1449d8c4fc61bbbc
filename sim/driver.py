"""One driver API over every backend: ``Npu(config, backend).run(program) -> Result``."""
from __future__ import annotations

from opennpu.config import NpuConfig
from opennpu.golden.checks import data_in_bytes, quant_params, validate
from opennpu.golden.deps import check_program
from opennpu.golden.isa import ErrorCode, Opcode, Precision
from opennpu.golden.model import GoldenNpu
from opennpu.golden.program import Program, ProgramError, Result

__all__ = ["BACKENDS", "BackendUnavailable", "BackendFailed", "Npu", "program_words", "data_in_takes"]

BACKENDS = ("golden", "pysim", "verilator", "uart")


class BackendUnavailable(RuntimeError):
    """The backend exists in the API but cannot run here (not built yet, or a tool is missing)."""


class BackendFailed(RuntimeError):
    """A backend could not run a program: its build failed, its simulator or link harness died or answered
    wrongly, or the RTL sources changed after this process imported them."""


def data_in_takes(config: NpuConfig, words: list[int]) -> list[int]:
    """Data-in bytes each command word takes (``golden.checks.data_in_bytes``: a ``LOAD`` its rows of
    whole beats, ``LOAD_LUT`` / ``LOAD_BIAS`` / ``LOAD_QUANT`` their register, accepted or rejected: the
    hardware consumes a rejected command's data and drops it)."""
    return [data_in_bytes(word, config) for word in words]


def program_words(config: NpuConfig, program: Program) -> list[int]:
    """The program's command words, once it is known to be runnable: at least one command, every
    word a 128-bit int (``Program.words``), data-in whole beats and exactly as long as its LOADs
    take (rejected ones included), and every accepted ``LOAD_QUANT``'s values in range (the hardware does
    not check data-in). Every
    backend calls this before it runs anything, so all refuse the same programs with the same error:
    ``ValueError``, ``ProgramError`` (a ValueError) for the data-in."""
    words = program.words()
    if not words:
        raise ValueError("program has no commands")
    size, bus = len(program.data_in), config.bus_bytes
    if size % bus:
        raise ValueError(f"data-in length {size} is not a whole number of {bus}-byte beats")
    takes = data_in_takes(config, words)
    need = sum(takes)
    if size < need:
        total, first = 0, 0
        while total + takes[first] <= size:
            total += takes[first]
            first += 1
        raise ProgramError(f"data-in stream too short: the program's LOADs take {need} bytes, it has "
                           f"{size} (command {first} is the first left without its data)")
    if size > need:
        raise ProgramError(f"data-in stream too long: the program's LOADs take {need} bytes, it has {size} "
                           f"({size - need} left over)")
    offset = 0
    for word, take in zip(words, takes):
        if take and word & 0xF == Opcode.LOAD_QUANT and validate(word, config, Precision.INT8)[0] == ErrorCode.OK:
            quant_params(program.data_in[offset:offset + take], config)     # (a rejected one's data is dropped)
        offset += take
    return words


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
        """Run ``program`` from reset. A program no backend can run is refused before anything runs, the
        same way on every backend: ``ValueError`` / ``ProgramError`` (``program_words``), then, for a
        program whose ``wait`` tokens leave a hazard unordered, ``golden.deps.HazardError`` (naming both
        commands)."""
        program_words(self.config, program)
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
