"""Open-toolchain FPGA builds of the board design: amaranth-boards platforms + YoWASP (Yosys, nextpnr).

``synthesize(board, config)`` elaborates ``hdl.board_top.BoardTop`` for the board, runs Yosys, nextpnr
(timing-driven, against the PLL's core clock) and the bitstream packer, and returns the resources and
Fmax parsed from the tools' reports. ``plan(board, config)`` stops after writing the build files
(fast: no tools run). Both first check that the design can fit the board (``check_fit``: lower bounds
of the DSPs and block RAMs it needs), so a config that cannot fit fails in seconds with a one-line
``DoesNotFit`` naming the resource, not after a long build.

The tools come from the environment variables amaranth-boards reads (``YOSYS``, ``NEXTPNR_ECP5``,
``ECPPACK``, ``NEXTPNR_ICE40``, ``ICEPACK``); unset ones default to the YoWASP commands
(``pip install opennpu[fpga]``), so no system toolchain is needed.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from opennpu.config import NpuConfig

from .boards import Board, get_board
from .report import parse_nextpnr_log, parse_nextpnr_report, parse_yosys_stat

__all__ = ["ToolMissing", "BuildFailed", "DoesNotFit", "SynthResult", "synth_config", "check_fit", "plan",
           "synthesize"]

NAME = "opennpu"


class ToolMissing(ValueError):
    """A tool of the flow is neither on PATH nor named by its environment variable."""


class DoesNotFit(ValueError):
    """The design needs more of an FPGA resource than the board's device has."""


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
    seed: int | None = None                                # nextpnr placement seed (None: nextpnr's default)
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
    _check_dsps(board, rows, cols)
    depths = {**board.depths, **{k: v for k, v in overrides.items() if v is not None}}
    return NpuConfig(rows=rows, cols=cols, dataflow=dataflow, **depths)


def _check_dsps(board: Board, rows: int, cols: int):
    if rows * cols > board.dsps:
        raise DoesNotFit(f"array {rows}x{cols} is too big for {board.name} ({board.device}): its {rows * cols} "
                         f"PE multipliers need {rows * cols} {board.dsp_cells[0]} DSPs, the device has {board.dsps}")


_MEMORY = re.compile(r"^\s*memory width (\d+) size (\d+) (\S+)", re.M)
_BLOCK_RAM_MIN_DEPTH = 512        # memories this deep always become block RAM (smaller ones may be LUT RAM or FFs)


def check_fit(board: Board | str, config: NpuConfig, rtlil: str):
    """Raise ``DoesNotFit`` when the design (its RTLIL) needs more DSPs or block RAMs than ``board`` has.

    Lower bounds, so a design that passes may still not fit (nextpnr then says which resource):
    one DSP per PE multiplier, and for every memory of at least 512 words the fewest block RAMs
    of the device's aspect ratios that hold it."""
    board = get_board(board) if isinstance(board, str) else board
    _check_dsps(board, config.rows, config.cols)
    brams = sum(min(math.ceil(width / w) * math.ceil(depth / d) for w, d in board.bram_shapes)
                for width, depth in ((int(w), int(d)) for w, d, _ in _MEMORY.findall(rtlil))
                if depth >= _BLOCK_RAM_MIN_DEPTH)
    if brams > board.brams:
        raise DoesNotFit(f"{config.array} with SRAM depths {config.act_depth}/{config.wgt_depth}/{config.acc_depth} "
                         f"does not fit {board.name} ({board.device}): its memories need at least {brams} "
                         f"{board.bram_cells[0]} block RAMs, the device has {board.brams}")


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
    # Amaranth names the elements of an ``ArrayLayout`` signal ``X`` ``X[0]``, ``X[1]``, ...: aliases of
    # slices of ``X``. When ABC9 reports bits of both ``X`` and ``X[k]`` by name, Yosys 0.70 rebuilds
    # ``X`` from ``X[k]`` wires of the wrong width (``abc_ops_reintegrate``: "Assert `GetSize(conn.first)
    # == GetSize(conn.second)' failed"), depending on which names the mapping happens to keep. Hiding
    # those names (ports excepted) before synthesis lets ``opt_clean`` drop the aliases.
    return {"nextpnr_opts": " ".join(nextpnr), "synth_opts": " ".join(synth),
            "script_after_read": "rename -hide w:*[[]*"}


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


def plan(board: Board | str, config: NpuConfig, *, freq_mhz: float | None = None, baud: int = 115_200,
         seed: int | None = None):
    """Elaborate the board design and return amaranth's ``BuildPlan`` (no tool runs); ``DoesNotFit``
    if the design cannot fit the board (``ValueError`` for a clock or baud rate that is not positive)."""
    _check_clocks(freq_mhz, baud)
    board = get_board(board) if isinstance(board, str) else board
    build_plan, _ = _plan(board, config, freq_mhz, baud, seed)
    return build_plan


def _plan(board: Board, config: NpuConfig, freq_mhz: float | None, baud: int, seed: int | None):
    top = _top(board, config, freq_mhz, baud)
    with _environment(_tool_env(board, check=False)):
        build_plan = board.platform_class()().build(top, name=NAME, do_build=False, **_overrides(board, seed))
    check_fit(board, config, build_plan.files[f"{NAME}.il"])
    return build_plan, top


def synthesize(board: Board | str, config: NpuConfig, *, freq_mhz: float | None = None,
               build_dir: str | os.PathLike = "build", baud: int = 115_200, seed: int | None = None,
               timeout_s: float | None = None) -> SynthResult:
    """Build the bitstream and return resources and timing. Raises ``DoesNotFit``, ``ToolMissing`` or
    ``BuildFailed`` (also when the tools run past ``timeout_s`` seconds: they are stopped);
    ``ValueError`` for a clock or baud rate that is not positive."""
    _check_clocks(freq_mhz, baud)
    board = get_board(board) if isinstance(board, str) else board
    started = time.monotonic()
    build_plan, top = _plan(board, config, freq_mhz or board.default_mhz, baud, seed)
    env = _tool_env(board, check=True)
    build_dir = Path(build_dir)
    build_plan.extract(build_dir)
    # The build script in its own process group, so that a timeout stops the tools it started too.
    proc = subprocess.Popen(["sh", f"{build_plan.script}.sh"], cwd=build_dir, env={**os.environ, **env},
                            start_new_session=True)
    try:
        returncode = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        stage = "nextpnr" if (build_dir / f"{NAME}.tim").exists() else "yosys"
        raise BuildFailed(f"{board.name} {config.array}: the build did not finish in {timeout_s:.0f} s "
                          f"(stopped in {stage}, seed {seed})") from None
    finally:
        if proc.poll() is None:                   # interrupted (e.g. Ctrl-C): stop the tools as well
            os.killpg(proc.pid, signal.SIGKILL)
    if returncode:
        raise _failure(board, config, build_dir, returncode)
    achieved_mhz = top.pll["f_out"] / 1e6 if top.pll else board.osc_mhz
    result = collect(board, config, build_dir, target_mhz=achieved_mhz, seconds=time.monotonic() - started)
    result.seed = seed
    return result


def _failure(board: Board, config: NpuConfig, build_dir: Path, returncode: int) -> BuildFailed:
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
    return BuildFailed(f"{board.name}: the build failed (exit {returncode})", tail)


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
