"""A sweep spec (TOML): the workloads, the axes whose Cartesian product gives the configurations, and an
optional filter. ``load_spec(path)`` validates all of it before anything runs: a bad key, value,
configuration or missing model file raises ``SpecError`` (a ``ValueError``) naming the file, the line
(where the key can be found in the text) and the key.

```toml
[sweep]
name = "example"                     # default: the file's stem
filter = "rows * cols <= 256"        # optional, over the point parameters (see POINT_NAMES)

[axes]                               # every axis optional; a missing one takes NpuConfig's default
array = ["4x4", "8x8"]               # rows x cols
dataflow = ["ws", "os"]
precision = ["int8", "a8w4", "a4w4"]
act_depth = [1024, 4096]             # SRAM depths in words
wgt_depth = [2048]
acc_depth = [1024]
bus_bytes = ["auto", 32]             # "auto": the smallest power of two holding one SRAM word
energy = ["horowitz-isscc2014-45nm", "cheap-dram"]

[energy.cheap-dram]                  # extra energy tables: EnergyTable fields, the rest default
dma_byte_fj = 40000

[[workload]]
gemm = [64, 64, 64]                  # M, K, N (random operands from `seed`)
act = "relu"                         # optional, default "none"
[[workload]]
onnx = "mlp.onnx"                    # quantized ONNX model, path relative to the spec
batch = 1
[[workload]]
tflite = "kws.tflite"                # int8 TFLite (convolutions and FC on the NPU, the rest on the host)

[verify]                             # optional Verilator spot-checks (verify.py)
fraction = 0.05                      # of the ok points
max_configs = 2                      # distinct configurations (one Verilator build each)
```
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from opennpu.config import DATAFLOWS, HOROWITZ_45NM, PRECISIONS, EnergyTable, NpuConfig, parse_array

from .expr import Filter

__all__ = ["SpecError", "Workload", "Point", "SweepSpec", "load_spec", "parse_spec", "AXES", "POINT_NAMES"]

AXES = ("array", "dataflow", "precision", "act_depth", "wgt_depth", "acc_depth", "bus_bytes", "energy")
#: Names a filter may use: the axis values as the spec writes them (``bus_bytes`` may be "auto"), the
#: array's ``rows`` and ``cols``, and the workload's ``workload`` name and ``kind``.
POINT_NAMES = ("workload", "kind", "array", "rows", "cols", "dataflow", "precision", "act_depth", "wgt_depth",
               "acc_depth", "bus_bytes", "energy")
_TABLES = ("sweep", "axes", "energy", "workload", "verify")
_VERIFY_KEYS = ("fraction", "max_configs")
_SWEEP_KEYS = ("name", "filter")
_WORKLOAD_KINDS = ("gemm", "onnx", "tflite")
_WORKLOAD_KEYS = (*_WORKLOAD_KINDS, "name", "act", "seed", "batch")
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


class SpecError(ValueError):
    """A sweep spec that cannot run; the message names the file, the line (when known) and the key."""


@dataclass(frozen=True)
class Workload:
    """One workload: a GEMM shape (``kind="gemm"``) or a model file (``"onnx"``, ``"tflite"``)."""
    name: str
    kind: str
    shape: tuple | None = None
    act: str = "none"
    seed: int = 0
    path: str | None = None
    batch: int = 1
    digest: str = ""                 # sha256 of the model file: a changed model is a new point

    def identity(self) -> dict:
        """What the results depend on (the path does not: a moved file keeps its results)."""
        return {"kind": self.kind, "shape": self.shape, "act": self.act, "seed": self.seed, "batch": self.batch,
                "digest": self.digest}


@dataclass(frozen=True)
class Point:
    """One workload on one configuration, run at one precision."""
    workload: Workload
    config: NpuConfig
    precision: str

    def params(self) -> dict:
        c = self.config
        return {"workload": self.workload.name, "kind": self.workload.kind, "array": c.array, "rows": c.rows,
                "cols": c.cols, "dataflow": c.dataflow, "precision": self.precision, "act_depth": c.act_depth,
                "wgt_depth": c.wgt_depth, "acc_depth": c.acc_depth, "bus_bytes": c.bus_bytes,
                "energy": c.energy.name}

    def key(self, code_version: str) -> str:
        """Hash of everything the point's results depend on, the code version included."""
        blob = json.dumps({"workload": self.workload.identity(), "config": self.config.to_dict(),
                           "precision": self.precision, "code": code_version}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class SweepSpec:
    path: Path
    name: str
    text: str
    workloads: list
    points: list
    filtered_out: int                # points of the product the filter removed
    verify: tuple | None = None      # (fraction, max_configs) of the Verilator spot-checks


def _locate(text: str, table: str, key: str | None, index: int = 0) -> int | None:
    """Line (1-based) of ``key = ...`` inside ``[table]`` (the ``index``-th ``[[table]]``), or of the
    table header when ``key`` is None; None when the text does not show it plainly."""
    current, seen, header_line = None, -1, None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        header = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?", stripped)
        if header:
            current = header.group(1)
            if current == table:
                seen += 1
                if seen == index:
                    header_line = number
                    if key is None:
                        return number
            continue
        if key is not None and current == table and seen == index and \
                re.match(rf"^[\"']?{re.escape(key)}[\"']?\s*=", stripped):
            return number
    return header_line


class _Errors:
    def __init__(self, path: Path, text: str):
        self.path, self.text = path, text

    def __call__(self, message: str, table: str, key: str | None = None, index: int = 0) -> SpecError:
        line = _locate(self.text, table, key, index)
        where = f"{self.path}:{line}" if line else str(self.path)
        dotted = f"{table}[{index}]" if table == "workload" else table
        return SpecError(f"{where}: {dotted}{'.' + key if key else ''}: {message}")


def load_spec(path) -> SweepSpec:
    """Read and validate a sweep spec file; ``SpecError`` for anything that cannot run."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"sweep spec {str(path)!r} not found" if not path.exists()
                        else f"sweep spec {str(path)!r} is not a file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"cannot read sweep spec {str(path)!r}: {error}") from None
    return parse_spec(text, path)


def parse_spec(text: str, path: Path) -> SweepSpec:
    """Validate spec ``text``; model paths are relative to ``path``'s folder."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: not valid TOML: {error}") from None
    err = _Errors(path, text)
    for table in data:
        if table not in _TABLES:
            raise err(f"unknown table; expected {', '.join(_TABLES)}", table)
    sweep = _table(data, "sweep", err)
    for key in sweep:
        if key not in _SWEEP_KEYS:
            raise err(f"unknown key; expected one of {_SWEEP_KEYS}", "sweep", key)
    name = sweep.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise err(f"must be a name of letters, digits and _.+- , got {name!r}", "sweep", "name")
    energies = _energy_tables(_table(data, "energy", err), err)
    axes = _axes(_table(data, "axes", err), energies, err)
    workloads = _workloads(data.get("workload"), path.parent, err)
    rule = None
    if "filter" in sweep:
        if not isinstance(sweep["filter"], str):
            raise err("must be a string (an expression)", "sweep", "filter")
        try:
            rule = Filter(sweep["filter"], POINT_NAMES)
        except ValueError as error:
            raise err(str(error), "sweep", "filter") from None
    points, dropped = [], 0
    for values in itertools.product(*axes.values()):
        setting = dict(zip(axes, values))
        rows, cols = parse_array(setting["array"])
        kept = []
        for workload in workloads:
            names = {**setting, "rows": rows, "cols": cols, "workload": workload.name, "kind": workload.kind}
            try:
                keep = rule is None or rule(names)
            except ValueError as error:
                raise err(str(error), "sweep", "filter") from None
            if keep:
                kept.append(workload)
            else:
                dropped += 1
        if kept:
            config = _config(setting, energies, err)
            points += [Point(workload, config, setting["precision"]) for workload in kept]
    if not points:
        raise err("no point is left (the filter removes every point)", "sweep", "filter")
    return SweepSpec(path, name, text, workloads, points, dropped, _verify(data, err))


def _verify(data: dict, err) -> tuple | None:
    if "verify" not in data:
        return None
    table = _table(data, "verify", err)
    for key in table:
        if key not in _VERIFY_KEYS:
            raise err(f"unknown key; expected one of {_VERIFY_KEYS}", "verify", key)
    fraction = table.get("fraction", 0.05)
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction <= 1:
        raise err(f"must be a number in (0, 1], got {fraction!r}", "verify", "fraction")
    cap = table.get("max_configs", 2)
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise err(f"must be an int >= 1 (each configuration needs its own Verilator build), got {cap!r}",
                  "verify", "max_configs")
    return float(fraction), cap


def _table(data: dict, name: str, err) -> dict:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise err("must be a table", name)
    return value


def _energy_tables(tables: dict, err) -> dict:
    fields = {f.name for f in dataclasses.fields(EnergyTable)} - {"name"}
    out = {HOROWITZ_45NM.name: HOROWITZ_45NM}
    for name, entries in tables.items():
        if not isinstance(entries, dict):
            raise err("must be a table of EnergyTable fields", "energy", name)
        table = f"energy.{name}"
        if name in out:
            raise err("is the built-in table; give yours another name", "energy", name)
        for key in entries:
            if key not in fields:
                raise err(f"unknown energy field; expected one of {sorted(fields)}", table, key)
        try:
            out[name] = EnergyTable(name=name, **entries)
        except (ValueError, TypeError) as error:
            raise err(str(error), table) from None
    return out


def _axes(table: dict, energies: dict, err) -> dict:
    for key in table:
        if key not in AXES:
            raise err(f"unknown axis; expected one of {AXES}", "axes", key)
    default = NpuConfig()
    defaults = {"array": [default.array], "dataflow": [default.dataflow], "precision": ["int8"],
                "act_depth": [default.act_depth], "wgt_depth": [default.wgt_depth], "acc_depth": [default.acc_depth],
                "bus_bytes": ["auto"], "energy": [HOROWITZ_45NM.name]}
    axes = {}
    for key in AXES:
        values = table.get(key, defaults[key])
        if not isinstance(values, list) or not values:
            raise err("must be a non-empty list", "axes", key)
        if len(set(map(str, values))) != len(values):
            raise err(f"lists a value twice: {values}", "axes", key)
        for value in values:
            problem = _axis_value_problem(key, value, energies)
            if problem:
                raise err(problem, "axes", key)
        axes[key] = values
    return axes


def _axis_value_problem(key: str, value, energies: dict) -> str | None:
    if key == "array":
        try:
            parse_array(value)
        except ValueError as error:
            return str(error)
    elif key == "dataflow" and value not in DATAFLOWS:
        return f"unknown dataflow {value!r}; expected one of {DATAFLOWS}"
    elif key == "precision" and value not in PRECISIONS:
        return f"unknown precision {value!r}; expected one of {PRECISIONS}"
    elif key.endswith("_depth") and (not isinstance(value, int) or isinstance(value, bool)):
        return f"depths are ints (words), got {value!r}"
    elif key == "bus_bytes" and value != "auto" and (not isinstance(value, int) or isinstance(value, bool)):
        return f"bus widths are ints (bytes) or \"auto\", got {value!r}"
    elif key == "energy" and value not in energies:
        return f"unknown energy table {value!r}; defined: {sorted(energies)}"
    return None


def _config(setting: dict, energies: dict, err) -> NpuConfig:
    rows, cols = parse_array(setting["array"])
    precision = setting["precision"]
    try:
        return NpuConfig(rows=rows, cols=cols, dataflow=setting["dataflow"],
                         precisions=("int8",) if precision == "int8" else ("int8", precision),
                         act_depth=setting["act_depth"], wgt_depth=setting["wgt_depth"],
                         acc_depth=setting["acc_depth"],
                         bus_bytes=None if setting["bus_bytes"] == "auto" else setting["bus_bytes"],
                         energy=energies[setting["energy"]])
    except ValueError as error:
        shown = ", ".join(f"{k}={v}" for k, v in setting.items())
        raise err(f"impossible configuration ({shown}): {error}; remove the value or exclude the "
                  f"combination with [sweep] filter", "axes") from None


def _workloads(entries, folder: Path, err) -> list:
    from opennpu.compiler.gemm import ACTIVATIONS
    if entries is None:
        raise err("the spec lists no workload: add [[workload]] tables", "sweep")
    if not isinstance(entries, list):
        raise err("must be an array of tables ([[workload]])", "workload")
    out, names = [], set()
    for i, entry in enumerate(entries):
        for key in entry:
            if key not in _WORKLOAD_KEYS:
                raise err(f"unknown key; expected one of {_WORKLOAD_KEYS}", "workload", key, i)
        kinds = [k for k in _WORKLOAD_KINDS if k in entry]
        if len(kinds) != 1:
            raise err(f"give exactly one of {_WORKLOAD_KINDS}", "workload", None, i)
        kind = kinds[0]
        for key in ("seed", "batch"):
            value = entry.get(key, 0 if key == "seed" else 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "seed" else 1):
                raise err(f"must be an int >= {0 if key == 'seed' else 1}, got {value!r}", "workload", key, i)
        act = entry.get("act", "none")
        if kind == "gemm":
            shape = entry["gemm"]
            if not isinstance(shape, list) or len(shape) != 3 or \
                    any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in shape):
                raise err(f"must be [M, K, N], three positive ints, got {shape!r}", "workload", "gemm", i)
            if act not in ACTIVATIONS:
                raise err(f"unknown activation {act!r}; expected one of {ACTIVATIONS}", "workload", "act", i)
            default_name = "gemm_{}x{}x{}".format(*shape)
            workload = dict(kind=kind, shape=tuple(shape), act=act, seed=entry.get("seed", 0))
        else:
            if "act" in entry:
                raise err("a model brings its own activations", "workload", "act", i)
            file = entry[kind]
            if not isinstance(file, str):
                raise err("must be a path (string)", "workload", kind, i)
            target = (folder / file) if not Path(file).is_absolute() else Path(file)
            if not target.is_file():
                raise err(f"model file {str(target)!r} not found", "workload", kind, i)
            default_name = target.stem
            workload = dict(kind=kind, path=str(target), batch=entry.get("batch", 1), seed=entry.get("seed", 0),
                            digest=hashlib.sha256(target.read_bytes()).hexdigest())
        name = entry.get("name", default_name)
        if not isinstance(name, str) or not _NAME.match(name):
            raise err(f"must be a name of letters, digits and _.+- , got {name!r}", "workload", "name", i)
        if name in names:
            raise err(f"workload name {name!r} is used twice; give one a name = ...", "workload", None, i)
        names.add(name)
        out.append(Workload(name=name, **workload))
    return out
