"""Open-toolchain FPGA builds of the board design: amaranth-boards platforms + YoWASP (Yosys, nextpnr).

``synthesize(board, config)`` elaborates ``hdl.board_top.BoardTop`` for the board, runs Yosys, nextpnr
(timing-driven, against the PLL's core clock) and the bitstream packer, and returns the resources and
Fmax parsed from the tools' reports. ``plan(board, config)`` stops after writing the build files
(fast: no tools run).

The tools come from the environment variables amaranth-boards reads (``YOSYS``, ``NEXTPNR_ECP5``,
``ECPPACK``, ``NEXTPNR_ICE40``, ``ICEPACK``); unset ones default to the YoWASP commands
(``pip install opennpu[fpga]``), so no system toolchain is needed.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from opennpu.config import NpuConfig

from .boards import Board, get_board
from .report import parse_nextpnr_log, parse_nextpnr_report, parse_yosys_stat

__all__ = ["ToolMissing", "BuildFailed", "SynthResult", "synth_config", "plan", "synthesize"]

NAME = "opennpu"


class ToolMissing(ValueError):
    """A tool of the flow is neither on PATH nor named by its environment variable."""


class BuildFailed(RuntimeError):
    """A tool exited with an error (e.g. the design does not fit); ``log_tail`` says why."""

    def __init__(self, message, log_tail=""):
        super().__init__(message)
        self.log_tail = log_tail


@dataclass
class SynthResult:
    board: str
    array: str
    luts: int
    ffs: int
    dsps: int
    brams: int
    fmax_mhz: float | None
    target_mhz: float
    bitstream: str | None
    timing_met: bool
    fits: bool
    utilization: dict = field(default_factory=dict)       # nextpnr cell type -> [used, available]
    yosys_cells: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    build_dir: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def synth_config(board: Board | str, rows: int, cols: int, dataflow: str = "ws", **overrides) -> NpuConfig:
    """The configuration a board is built with: the board's SRAM depths unless overridden."""
    board = get_board(board) if isinstance(board, str) else board
    if rows * cols > board.max_pes:
        raise ValueError(f"array {rows}x{cols} is too big for {board.name} ({board.device}): "
                         f"at most {board.max_pes} PEs")
    depths = {**board.depths, **{k: v for k, v in overrides.items() if v is not None}}
    return NpuConfig(rows=rows, cols=cols, dataflow=dataflow, **depths)


def _tool_env(board: Board, *, check: bool) -> dict:
    env = {}
    for var, default in board.tools:
        command = os.environ.get(var, default)
        if var not in os.environ and shutil.which(command) is None:
            # A virtual environment's scripts are not on PATH unless it is activated.
            beside = Path(sys.executable).parent / command
            if beside.exists():
                command = str(beside)
        if check and shutil.which(command) is None:
            raise ToolMissing(f"tool {command!r} not found (set {var} or `pip install opennpu[fpga]` "
                              f"for the YoWASP tools)")
        env[var] = command
    # The platforms look the programmer up even when nothing is programmed.
    env[board.program_env] = os.environ.get(board.program_env, "true")
    return env


def _check_clocks(freq_mhz: float | None, baud: int):
    """ValueError for a core clock or a UART rate that is not a positive number."""
    if freq_mhz is not None and not freq_mhz > 0:          # also refuses nan
        raise ValueError(f"the core clock must be > 0 MHz, got {freq_mhz}")
    if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
        raise ValueError(f"the UART baud rate must be a positive integer, got {baud!r}")


def _top(board: Board, config: NpuConfig, freq_mhz: float | None, baud: int):
    from opennpu.hdl.board_top import BoardTop
    return BoardTop(config, clk_freq=(freq_mhz or board.default_mhz) * 1e6, baud=baud)


def _overrides(board: Board, seed: int | None) -> dict:
    # router2 copes with the congestion of wide datapaths much better than router1.
    nextpnr = ["--report", f"{NAME}.report.json", "--timing-allow-fail", "--router", "router2"]
    if seed is not None:
        nextpnr += ["--seed", str(seed)]
    synth = ["-abc9"] if board.family == "ecp5" else ["-dsp", "-abc9"]
    return {"nextpnr_opts": " ".join(nextpnr), "synth_opts": " ".join(synth)}


@contextlib.contextmanager
def _environment(env: dict):
    """``os.environ`` with ``env`` added (amaranth's build reads the tool names from it), restored after."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def plan(board: Board | str, config: NpuConfig, *, freq_mhz: float | None = None, baud: int = 115_200):
    """Elaborate the board design and return amaranth's ``BuildPlan`` (no tool runs)."""
    _check_clocks(freq_mhz, baud)
    board = get_board(board) if isinstance(board, str) else board
    env = _tool_env(board, check=False)
    with _environment(env):
        platform = board.platform_class()()
        return platform.build(_top(board, config, freq_mhz, baud), name=NAME, do_build=False,
                              **_overrides(board, None))


def synthesize(board: Board | str, config: NpuConfig, *, freq_mhz: float | None = None,
               build_dir: str | os.PathLike = "build", baud: int = 115_200, seed: int | None = None) -> SynthResult:
    """Build the bitstream and return resources and timing. Raises ``ToolMissing`` or ``BuildFailed``
    (``ValueError`` for a clock or baud rate that is not positive)."""
    _check_clocks(freq_mhz, baud)
    board = get_board(board) if isinstance(board, str) else board
    env = _tool_env(board, check=True)
    target = freq_mhz or board.default_mhz
    build_dir = Path(build_dir)
    started = time.monotonic()
    with _environment(env):
        platform = board.platform_class()()
        top = _top(board, config, target, baud)
        try:
            platform.build(top, name=NAME, build_dir=str(build_dir), do_program=False, **_overrides(board, seed))
        except subprocess.CalledProcessError as error:
            raise _failure(board, config, build_dir, error) from None
    achieved_mhz = top.pll["f_out"] / 1e6 if top.pll else board.osc_mhz
    return collect(board, config, build_dir, target_mhz=achieved_mhz, seconds=time.monotonic() - started)


def _failure(board: Board, config: NpuConfig, build_dir: Path, error) -> BuildFailed:
    """Say why a build failed: over-used FPGA resources if nextpnr got that far, else the log tail."""
    pnr_log = build_dir / f"{NAME}.tim"
    tail = ""
    for log in (pnr_log, build_dir / f"{NAME}.rpt"):
        if log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            break
    if pnr_log.exists():
        util = parse_nextpnr_log(pnr_log.read_text(errors="replace"))["utilization"]
        over = [f"{cell} {used}/{avail}" for cell, (used, avail) in util.items() if avail and used > avail]
        if over:
            return BuildFailed(f"{config.array} does not fit {board.name} ({board.device}): "
                               + ", ".join(over), tail)
    return BuildFailed(f"{board.name}: the build failed (exit {error.returncode})", tail)


def collect(board: Board | str, config: NpuConfig, build_dir, *, target_mhz: float, seconds: float = 0.0) -> SynthResult:
    """Parse the reports a finished build left in ``build_dir``."""
    board = get_board(board) if isinstance(board, str) else board
    build_dir = Path(build_dir)
    report_path = build_dir / f"{NAME}.report.json"
    log_path = build_dir / f"{NAME}.tim"
    if report_path.exists():
        pnr = parse_nextpnr_report(report_path.read_text())
    elif log_path.exists():
        pnr = parse_nextpnr_log(log_path.read_text(errors="replace"))
    else:
        raise BuildFailed(f"no nextpnr report in {build_dir}")
    rpt = build_dir / f"{NAME}.rpt"
    cells = parse_yosys_stat(rpt.read_text(errors="replace")) if rpt.exists() else {}
    util = pnr["utilization"]

    def used(*names):
        return sum(util.get(n, (0, 0))[0] for n in names)

    if board.family == "ecp5":
        luts = used("TRELLIS_COMB") or cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
        ffs = used("TRELLIS_FF") or sum(v for k, v in cells.items() if k.startswith("TRELLIS_FF"))
    else:
        luts = cells.get("SB_LUT4", 0)
        ffs = sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
    fmax = None
    if pnr["fmax"]:
        # The core clock: the constrained clock closest to the target (the oscillator net may be listed too).
        clock = min(pnr["fmax"].items(), key=lambda kv: abs(kv[1][1] - target_mhz))
        fmax = clock[1][0]
    fits = all(u <= a for u, a in util.values() if a)
    bit = next((p for p in (build_dir / f"{NAME}.bit", build_dir / f"{NAME}.bin") if p.exists()), None)
    return SynthResult(
        board=board.name, array=config.array, luts=luts, ffs=ffs, dsps=used(*board.dsp_cells),
        brams=used(*board.bram_cells), fmax_mhz=fmax, target_mhz=round(target_mhz, 3),
        bitstream=str(bit) if bit else None, timing_met=fmax is not None and fmax >= target_mhz,
        fits=fits, utilization={k: list(v) for k, v in util.items()}, yosys_cells=cells,
        config=config.to_dict(), build_dir=str(build_dir), seconds=round(seconds, 1))
