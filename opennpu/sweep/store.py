"""Results of a sweep on disk: ``results.csv`` (one row per finished point, appended and flushed to disk
as each point finishes, keyed by ``Point.key``: a hash of the point and the code version), ``verify.csv``
(the Verilator spot-checks, the same way) and the JSON sidecar ``sweep.json`` (the spec, the code
version, what every column means).

A kill can cut at most the row being written: ``open`` drops a last line without its newline, so a
rerun redoes exactly the points that have no complete row.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from .point import ENERGY_PARTS

__all__ = ["ResultStore", "CsvLog", "COLUMNS", "COLUMN_DOC", "VERIFY_COLUMNS", "VERIFY_DOC"]

COLUMN_DOC = {
    "key": "hash of the point (workload, configuration, precision) and the code version",
    "code_version": "hash of the opennpu sources that produced the row",
    "status": "ok | failed | unsupported",
    "error": "why the point failed or is unsupported",
    "workload": "workload name", "kind": "gemm | onnx | tflite", "array": "rows x cols",
    "rows": "array rows", "cols": "array columns", "dataflow": "ws | os", "precision": "int8 | a8w4 | a4w4",
    "act_depth": "activation SRAM words", "wgt_depth": "weight SRAM words", "acc_depth": "accumulator SRAM words",
    "bus_bytes": "data-in/out stream width, bytes per cycle", "energy": "energy table name",
    "cycles": "total cycles (golden model, equal to the RTL)", "busy_cycles": "cycles the array did useful work",
    "stall_cycles": "cycles waiting on host streams", "macs": "useful multiply-accumulates",
    "utilization": "macs / (cycles * rows * cols * MACs per PE)",
    "bound": "largest lower-bound term: compute | dma_in | dma_out",
    "bound_cycles": "max(ceil(macs / peak MACs per cycle), ceil(dma_in_bytes / bus), ceil(dma_out_bytes / bus))",
    "bound_fraction": "bound_cycles / cycles", "energy_fj": "energy counter, femtojoules",
    **{f"energy_{p}_fj": f"energy of the {p.replace('_', ' ')} events, fJ (the parts sum to energy_fj)"
       for p in ENERGY_PARTS},
    "dma_in_bytes": "bytes streamed in", "dma_out_bytes": "bytes streamed out",
    "sram_bytes": "activation + weight + accumulator SRAM bytes (area proxy)",
    "mac_units": "rows * cols (area proxy)",
    "fits": "every layer's activations, weights and int32 results each fit their SRAM at once",
    "programs": "programs run (host round trips)", "wall_s": "seconds the point took on its worker",
}
COLUMNS = tuple(COLUMN_DOC)
VERIFY_DOC = {
    "key": "the point (its row in results.csv)", "code_version": "hash of the opennpu sources",
    "backend": "the RTL simulator", "status": "equal | differ | failed",
    "differ": "counters (and 'outputs') whose RTL value differs from the golden model's",
    "error": "why the check failed", "wall_s": "seconds the check took (a first run on a configuration "
    "includes its Verilator build)",
}
VERIFY_COLUMNS = tuple(VERIFY_DOC)

_INTS = {"rows", "cols", "act_depth", "wgt_depth", "acc_depth", "bus_bytes", "cycles", "busy_cycles",
         "stall_cycles", "macs", "bound_cycles", "energy_fj", *(f"energy_{p}_fj" for p in ENERGY_PARTS),
         "dma_in_bytes", "dma_out_bytes", "sram_bytes", "mac_units", "programs"}
_FLOATS = {"utilization", "bound_fraction", "wall_s"}


def _typed(row: dict) -> dict:
    out = {}
    for name, text in row.items():
        if text == "":
            out[name] = None
        elif name in _INTS:
            out[name] = int(text)
        elif name in _FLOATS:
            out[name] = float(text)
        elif name == "fits":
            out[name] = text == "True"
        else:
            out[name] = text
    return out


class CsvLog:
    """A CSV file of fixed ``columns`` that grows one flushed row at a time."""

    def __init__(self, path: Path, columns: tuple):
        self.path, self.columns = Path(path), columns

    def check(self):
        if self.path.exists():
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), None)
            if header is not None and tuple(header) != self.columns:
                raise ValueError(f"{self.path} has other columns (an older sweep format); use a new --out folder")

    def open(self):
        """Write the header of a new file, or cut a partly written last row of an earlier run."""
        if self.path.exists() and self.path.stat().st_size:
            data = self.path.read_bytes()
            if not data.endswith(b"\n"):
                with self.path.open("r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)
        if not self.path.exists() or not self.path.stat().st_size:
            self._write_line(self.columns)

    def _write_line(self, values):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(values)
        with self.path.open("a", newline="") as f:
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())

    def append(self, record: dict):
        """Write one row (``record`` may leave columns out: empty cells)."""
        unknown = set(record) - set(self.columns)
        if unknown:
            raise ValueError(f"record has unknown columns {sorted(unknown)}")
        self._write_line(["" if record.get(name) is None else record[name] for name in self.columns])

    def rows(self) -> list[dict]:
        """Every complete row, typed (ints, floats, bools; None for empty cells)."""
        if not self.path.exists():
            return []
        text = self.path.read_text()
        if not text.endswith("\n"):
            text = text[:text.rfind("\n") + 1]
        return [_typed(row) for row in csv.DictReader(io.StringIO(text))]


class ResultStore:
    """The results folder of one sweep: ``results.csv``, ``verify.csv`` (Verilator spot-checks, see
    ``verify.py``) and ``sweep.json``."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.results = CsvLog(self.folder / "results.csv", COLUMNS)
        self.checks = CsvLog(self.folder / "verify.csv", VERIFY_COLUMNS)
        self.sidecar = self.folder / "sweep.json"

    @property
    def csv(self) -> Path:
        return self.results.path

    def check(self):
        """Refuse, before any work, a folder that cannot hold the results: ``ValueError``."""
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"--out {str(self.folder)!r} is a file; give a folder (it is created if missing)")
        existing = self.folder if self.folder.exists() else next(p for p in self.folder.parents if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK):
            raise ValueError(f"--out {str(self.folder)!r}: {str(existing)!r} is not a writable folder")
        self.results.check()
        self.checks.check()

    def open(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        self.results.open()

    def append(self, record: dict):
        self.results.append(record)

    def rows(self) -> list[dict]:
        return self.results.rows()

    def keys(self) -> set:
        return {row["key"] for row in self.rows()}

    def write_sidecar(self, meta: dict):
        """Write ``sweep.json`` atomically (a kill leaves the old one or the new one)."""
        tmp = self.sidecar.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({**meta, "columns": COLUMN_DOC, "verify_columns": VERIFY_DOC}, indent=1,
                                  default=str))
        os.replace(tmp, self.sidecar)

    def read_sidecar(self) -> dict:
        if not self.sidecar.is_file():
            raise ValueError(f"{str(self.folder)!r} holds no sweep results ({self.sidecar.name} not found)")
        try:
            return json.loads(self.sidecar.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{self.sidecar} is not valid JSON: {error}") from None
