"""FPGA board builds of the NPU: resources, Fmax, seed, build time and the fixed overhead, in one table.

Each config is the board design that ``opennpu synth --json`` builds (``synth.flow.synthesize``: the
NPU behind its UART host link, the board's SRAM depths, INT8), constrained at the config's clock.
Seeds are tried in order until one meets timing; the best of the tries counts and its seed is
printed. A build that runs past ``--timeout`` counts as a failed try.

The fixed overhead is measured per module on the same board design (``synth.breakdown``, the method
of ``../shared/tools/fpga_breakdown.sh``): every LUT4 except the PE array and the activation-unit
lanes, which are printed apart (ECP5 only).

    python benchmarks/bench_fpga.py [--configs ulx3s-85f:4x4@125,ulx3s-85f:8x8@100] [--seeds 1,2,3]
                                    [--timeout 900] [--breakdown-only] [--modules] [--json] [--out FILE]

Needs the YoWASP tools (``pip install -e '.[fpga]'``, or ``make bench-fpga``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from opennpu.config import parse_array
from opennpu.synth.boards import get_board
from opennpu.synth.breakdown import breakdown
from opennpu.synth.flow import BuildFailed, _tool_env, plan, synth_config, synthesize

#: Issue 14's configurations: ULX3S-85F, INT8, SRAM depths 4096/2048/1024, at their target clocks.
DEFAULT_CONFIGS = "ulx3s-85f:4x4@125,ulx3s-85f:8x8@100"


def parse_configs(text: str) -> list[tuple[str, tuple[int, int], float | None]]:
    """``BOARD:RxC[@MHZ],...`` -> [(board, (rows, cols), MHz or None for the board's default)]."""
    configs = []
    for item in text.split(","):
        board, sep, rest = item.strip().partition(":")
        if not sep:
            raise ValueError(f"config {item!r}: expected BOARD:RxC[@MHZ], e.g. ulx3s-85f:8x8@100")
        array, _, mhz = rest.partition("@")
        try:
            freq = float(mhz) if mhz else None
        except ValueError:
            raise ValueError(f"config {item!r}: clock {mhz!r} is not a number of MHz") from None
        configs.append((get_board(board).name, parse_array(array), freq))
    return configs


def _writable(path: Path, what: str):
    """Fail now, not after hours of builds, if ``path`` (a file or directory to be) cannot be written."""
    probe = path if path.is_dir() else path.parent
    try:
        probe.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as error:
        raise ValueError(f"{what} {path} is not writable: {error.strerror}") from None


def _row(board, config, freq, seeds, args) -> dict:
    row = {"board": board, "array": config.array, "depths": f"{config.act_depth}/{config.wgt_depth}/"
           f"{config.acc_depth}", "tries": []}
    if get_board(board).family == "ecp5":
        split = breakdown(board, config)
        row["breakdown"] = split.to_dict()
        row["overhead_lut4"] = split.overhead_lut4
    if args.breakdown_only:
        return row
    best = None
    for seed in seeds:
        build_dir = Path(args.build_dir) / f"{board}-{config.array}-seed{seed}"
        try:
            result = synthesize(board, config, freq_mhz=freq, seed=seed, build_dir=build_dir,
                                timeout_s=args.timeout)
        except BuildFailed as error:
            row["tries"].append({"seed": seed, "error": str(error)})
            print(f"  {board} {config.array} seed {seed}: {error}", file=sys.stderr, flush=True)
            continue
        report = result.to_dict()
        report.pop("yosys_cells")
        row["tries"].append(report)
        print(f"  {board} {config.array} seed {seed}: {result.fmax_mhz} MHz (target {result.target_mhz}), "
              f"{result.seconds:.0f} s", file=sys.stderr, flush=True)
        if best is None or (result.fmax_mhz or 0) > (best["fmax_mhz"] or 0):
            best = report
        if result.timing_met:
            break
    row["best"] = best
    return row


def _commit() -> str | None:
    """The commit measured (with ``+dirty`` when the work tree differs from it)."""
    git = ["git", "-C", str(Path(__file__).resolve().parent)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        return None
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _fmt(value, spec="") -> str:
    return "-" if value is None else format(value, spec)


def table(rows, modules: bool) -> str:
    head = (f"{'board':10} {'array':5} {'SRAM words':15} {'LUTs':>7} {'FFs':>7} {'DSPs':>5} {'BRAMs':>5} "
            f"{'Fmax MHz':>8} {'clock':>6} {'seed':>4} {'build s':>7} {'overhead':>8} {'array':>6} {'act':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        best, split = r.get("best"), r.get("breakdown")
        totals = split["totals"] if split else {}
        if best:
            src = best
        elif split:
            src = dict(zip(("luts", "ffs", "dsps", "brams"), (split["total"][k] for k in ("lut4", "ff", "dsp", "bram"))))
        else:
            src = {}
        lines.append(
            f"{r['board']:10} {r['array']:5} {r['depths']:15} {_fmt(src.get('luts')):>7} {_fmt(src.get('ffs')):>7} "
            f"{_fmt(src.get('dsps')):>5} {_fmt(src.get('brams')):>5} {_fmt(best and best['fmax_mhz'], '.1f'):>8} "
            f"{_fmt(best and best['target_mhz'], 'g'):>6} {_fmt(best and best['seed']):>4} "
            f"{_fmt(best and best['seconds'], '.0f'):>7} {_fmt(r.get('overhead_lut4')):>8} "
            f"{_fmt(totals.get('array', {}).get('lut4')):>6} {_fmt(totals.get('activation', {}).get('lut4')):>6}")
        failed = [t for t in r["tries"] if "error" in t]
        lines += [f"    seed {t['seed']}: {t['error']}" for t in failed]
    lines.append("LUTs..BRAMs: the routed build (nextpnr) when one ran, else the per-module Yosys totals; "
                 "overhead / array / act: LUT4 per module (synth/breakdown.py)")
    if modules:
        for r in rows:
            if r.get("breakdown"):
                lines += ["", f"{r['board']} {r['array']} per module ({r['breakdown']['seconds']:.0f} s):",
                          f"  {'module':48} {'group':10} {'LUT4':>7} {'FF':>7} {'DSP':>5} {'BRAM':>5}"]
                lines += [f"  {m['module'][:48]:48} {m['group']:10} {m['lut4']:7d} {m['ff']:7d} {m['dsp']:5d} "
                          f"{m['bram']:5d}" for m in r["breakdown"]["rows"] if m["lut4"] or m["ff"] or m["bram"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"BOARD:RxC[@MHZ],... (default {DEFAULT_CONFIGS})")
    ap.add_argument("--seeds", default="1,2,3", help="nextpnr seeds tried in order until timing is met")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per build (default 900)")
    ap.add_argument("--build-dir", default="build/bench-fpga")
    ap.add_argument("--breakdown-only", action="store_true", help="per-module figures only, no routed build")
    ap.add_argument("--modules", action="store_true", help="print the per-module rows as well")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--out", default=None, help="also write the JSON to this file")
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        configs = parse_configs(args.configs)
        # Everything that can fail fast does so before the first long build.
        for board in {b for b, _, _ in configs}:
            _tool_env(get_board(board), check=True)
        if args.out:
            _writable(Path(args.out), "--out")
        _writable(Path(args.build_dir), "--build-dir")
        built = []
        for board, (r, c), freq in configs:
            config = synth_config(board, r, c)
            plan(board, config, freq_mhz=freq)             # fit check: DoesNotFit names the resource
            built.append((board, config, freq))
    except ValueError as error:
        print(f"bench_fpga: error: {error}", file=sys.stderr)
        return 2
    started = time.monotonic()
    rows = []
    for board, config, freq in built:
        try:
            rows.append(_row(board, config, freq, seeds, args))
        except BuildFailed as error:
            print(f"bench_fpga: error: {error}", file=sys.stderr)
            return 2
    result = {"rows": rows, "seconds": round(time.monotonic() - started, 1),
              "commit": _commit()}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2) if args.json else
          f"commit {result['commit']}, {result['seconds']:.0f} s\n" + table(rows, args.modules))
    return 0


if __name__ == "__main__":
    sys.exit(main())
