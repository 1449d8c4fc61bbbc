"""Parse what Yosys and nextpnr report: cell counts, utilisation and Fmax."""
from __future__ import annotations

import json
import re

__all__ = ["parse_nextpnr_report", "parse_nextpnr_log", "parse_yosys_stat"]


def parse_nextpnr_report(text: str) -> dict:
    """nextpnr ``--report`` JSON -> ``{"utilization": {cell: (used, available)}, "fmax": {clock: (achieved,
    constraint)}}`` (MHz)."""
    report = json.loads(text)
    util = {cell: (int(v["used"]), int(v["available"])) for cell, v in report.get("utilization", {}).items()}
    fmax = {clock: (float(v["achieved"]), float(v["constraint"])) for clock, v in report.get("fmax", {}).items()}
    return {"utilization": util, "fmax": fmax}


_UTIL = re.compile(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%")
_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)")


def parse_nextpnr_log(text: str) -> dict:
    """The same from a nextpnr log (the last utilisation table and the last Fmax line per clock win)."""
    util, fmax = {}, {}
    for cell, used, avail in _UTIL.findall(text):
        util[cell] = (int(used), int(avail))
    for clock, achieved, _, constraint in _FMAX.findall(text):
        fmax[clock] = (float(achieved), float(constraint))
    return {"utilization": util, "fmax": fmax}


_STAT_CELL = re.compile(r"^\s+(\d+)\s+(\$?[\w$]+)\s*$|^\s+(\$?[\w$]+)\s+(\d+)\s*$")


def parse_yosys_stat(text: str) -> dict:
    """Cell counts of the top-level ``stat`` at the end of a Yosys log (design hierarchy flattened)."""
    start = max(text.rfind("Printing statistics."), 0)
    section = text[start:]
    cells = {}
    for line in section.splitlines():
        match = _STAT_CELL.match(line)
        if not match:
            continue
        if match.group(1):
            count, cell = int(match.group(1)), match.group(2)
        else:
            cell, count = match.group(3), int(match.group(4))
        if cell.isdigit():
            continue
        cells[cell] = count                     # later (flattened top) tables overwrite earlier ones
    return cells
