"""ECP5 resources of the board design per module (hierarchy kept), and the fixed overhead.

The method of ``../shared/tools/fpga_breakdown.sh``, applied to the board top that ``opennpu synth``
builds (``hdl.board_top.BoardTop``: the NPU, the UART host link, the PLL and the I/O buffers): the
build plan's RTLIL is mapped with Yosys's ECP5 flow without flattening (``abc -lut 4``: this Yosys
build's ``abc9`` crashes on some un-flattened modules) and ``stat`` is read one module at a time.
Amaranth writes one RTLIL module per instance, so every row is one instance.

LUT4 per module = ``LUT4 + 2 * CCU2C + 4 * TRELLIS_DPR16X4`` (a carry cell is two LUT4s, a LUT-RAM
cell about four). The counts are pre-placement and slightly above a flattened build (no
cross-module optimization): they compare blocks; the routed ``opennpu synth`` figures are the whole
design's.

Groups: ``array`` is every module at or below a hierarchy level named ``array`` (the PEs), ``activation``
every module at or below ``act_fn`` (the activation-unit lanes and their LUT); everything else is the
**fixed overhead** (host link, UART, FIFOs, queues, dispatcher, checkers, counters, SRAM glue, reset
and clock logic).
"""
from __future__ import annotations

import collections
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from opennpu.config import NpuConfig

from .boards import get_board
from .flow import BuildFailed, _tool_env, plan

__all__ = ["GROUPS", "ModuleRow", "Breakdown", "breakdown", "parse_stat"]

#: Hierarchy level names that start the groups reported apart from the fixed overhead.
GROUPS = {"array": "array", "act_fn": "activation"}

_SCRIPT = """read_rtlil {il}
synth_ecp5 -noflatten -top {top} -run begin:map_luts
abc -lut 4
clean
synth_ecp5 -noflatten -top {top} -run map_cells:
tee -q -o stat.txt stat
"""
_CELL = re.compile(r"^\s+(\d+)\s+(?:\S+\s+)?(\$?[A-Za-z_][\w$]*)\s*$", re.M)


@dataclass
class ModuleRow:
    module: str
    group: str          # "array", "activation" or "overhead"
    lut4: int
    ff: int
    dsp: int
    bram: int


@dataclass
class Breakdown:
    board: str
    array: str
    config: dict
    rows: list = field(default_factory=list)           # ModuleRow, largest LUT4 first
    seconds: float = 0.0

    def total(self, group: str | None = None) -> dict:
        rows = [r for r in self.rows if group is None or r.group == group]
        return {k: sum(getattr(r, k) for r in rows) for k in ("lut4", "ff", "dsp", "bram")}

    @property
    def overhead_lut4(self) -> int:
        return self.total("overhead")["lut4"]

    def to_dict(self) -> dict:
        return {**asdict(self), "totals": {g: self.total(g) for g in ("array", "activation", "overhead")},
                "total": self.total(), "overhead_lut4": self.overhead_lut4}


def _group(module: str) -> str:
    for part in module.split("."):
        if part in GROUPS:
            return GROUPS[part]
    return "overhead"


def parse_stat(text: str) -> list[ModuleRow]:
    """Yosys ``stat`` of an un-flattened design -> one row per module (its own cells, not its children's)."""
    rows = []
    for block in re.split(r"\n=== ", "\n" + text)[1:]:
        name = block.split(" ===", 1)[0].strip().lstrip("\\")
        if name == "design hierarchy":
            continue
        cells = collections.Counter()
        for count, cell in _CELL.findall(block):
            cells[cell] += int(count)
        rows.append(ModuleRow(
            module=name, group=_group(name),
            lut4=cells["LUT4"] + 2 * cells["CCU2C"] + 4 * cells["TRELLIS_DPR16X4"],
            ff=sum(v for k, v in cells.items() if k.startswith("TRELLIS_FF")),
            dsp=cells["MULT18X18D"], bram=cells["DP16KD"]))
    return sorted(rows, key=lambda r: -r.lut4)


def breakdown(board: str, config: NpuConfig, *, work_dir: str | Path | None = None,
              baud: int = 115_200) -> Breakdown:
    """Map the board design for ``board`` (an ECP5 board) per module; see the module docstring."""
    board = get_board(board)
    if board.family != "ecp5":
        raise ValueError(f"the per-module breakdown maps to ECP5 cells; {board.name} is {board.family}")
    yosys = _tool_env(board, check=True)["YOSYS"]
    build_plan = plan(board, config, baud=baud)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(work_dir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        (work / "top.il").write_text(build_plan.files["opennpu.il"])
        (work / "breakdown.ys").write_text(_SCRIPT.format(il="top.il", top="opennpu"))
        # (The YoWASP tools only see the working directory: relative paths.)
        proc = subprocess.run([yosys, "-q", "-l", "breakdown.log", "-s", "breakdown.ys"], cwd=work,
                              capture_output=True, text=True)
        if proc.returncode:
            log = work / "breakdown.log"
            tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else [proc.stderr]
            raise BuildFailed(f"breakdown {board.name} {config.array}: yosys failed (exit {proc.returncode})",
                              "\n".join(tail))
        rows = parse_stat((work / "stat.txt").read_text())
    if not any(r.group == "array" for r in rows):
        raise BuildFailed(f"breakdown {board.name} {config.array}: no module under a level named 'array' "
                          f"(the PE array); synth/breakdown.py GROUPS must follow the RTL's names")
    return Breakdown(board=board.name, array=config.array, config=config.to_dict(), rows=rows,
                     seconds=round(time.monotonic() - started, 1))
