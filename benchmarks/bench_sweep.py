"""Sweep throughput in points per second: a local Ray with 1 worker, with 2 workers (the scaling ratio),
and the same sweep on a Ray cluster started here with ``ray start --head`` (localhost, 2 CPUs).

The spec (written to a temporary folder) is 54 output-stationary GEMM points of similar cost; each run
starts from an empty results folder. ``points/s`` counts from the first task to the last result; Ray's
start-up is shown apart. The machine's load average is printed too: on a shared machine it moves the
figures.

Run: ``python benchmarks/bench_sweep.py [--json]`` (needs the ``sweep`` extra; a few minutes here).
"""
import argparse
import json
import os
import tempfile
from pathlib import Path

SPEC = """\
[sweep]
name = "bench"

[axes]
array = ["8x8", "16x16"]
dataflow = ["os"]
act_depth = [1024, 2048, 4096]
wgt_depth = [512, 1024, 2048]
acc_depth = [256, 512, 1024]

[[workload]]
gemm = [128, 192, 128]
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from opennpu.sweep.cluster import head_node
    from opennpu.sweep.runner import run_sweep
    from opennpu.sweep.spec import load_spec
    results = {}
    with tempfile.TemporaryDirectory(prefix="opennpu-bench-sweep-") as folder:
        path = Path(folder) / "bench.toml"
        path.write_text(SPEC)
        spec = load_spec(path)
        for name, options in (("local, 1 worker", {"workers": 1}), ("local, 2 workers", {"workers": 2})):
            results[name] = run_sweep(spec, Path(folder) / name.replace(" ", "_"), progress=False, **options)
            results[name]["load_avg"] = os.getloadavg()[0]
        with head_node(num_cpus=2) as address:
            name = "ray start --head (2 CPUs)"
            results[name] = run_sweep(spec, Path(folder) / "cluster", address=address, progress=False)
            results[name]["load_avg"] = os.getloadavg()[0]
    ratio = results["local, 2 workers"]["points_per_s"] / results["local, 1 worker"]["points_per_s"]
    if args.json:
        print(json.dumps({"runs": results, "scaling_2_vs_1": ratio}, indent=1))
        return
    print(f"{'run':<28}{'points':>7}{'ok':>5}{'ray start s':>13}{'run s':>8}{'points/s':>10}{'load':>6}")
    for name, r in results.items():
        print(f"{name:<28}{r['ran']:>7}{r['ok']:>5}{r['ray_start_s']:>13.1f}{r['run_s']:>8.1f}"
              f"{r['points_per_s']:>10.2f}{r['load_avg']:>6.1f}")
    print(f"scaling, 2 workers vs 1: {ratio:.2f}x")


if __name__ == "__main__":
    main()
