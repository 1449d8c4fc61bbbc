"""Sweep outputs from the recorded results (``opennpu sweep --report DIR`` rebuilds them): per workload
the Pareto front of latency (cycles) vs energy over its ``ok`` points, as a plot (area proxies as colour,
SRAM bytes, and size, MAC units) and a CSV table, and ``summary.md`` with the fronts, every failed or
unsupported point's reason and the Verilator spot-checks. Only rows of the code version of the latest run count."""
from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

from .store import ResultStore

__all__ = ["pareto_front", "build_report"]

_FRONT_COLUMNS = ("key", "array", "dataflow", "precision", "act_depth", "wgt_depth", "acc_depth", "bus_bytes",
                  "energy", "cycles", "utilization", "bound", "energy_fj", "dma_in_bytes", "dma_out_bytes",
                  "sram_bytes", "mac_units", "fits")


def pareto_front(rows: list, x: str = "cycles", y: str = "energy_fj") -> list:
    """Rows no other row beats on both ``x`` and ``y`` (lower is better), sorted by ``x``; of rows
    with equal ``x`` and ``y`` the first is kept."""
    front, best = [], None
    for row in sorted(rows, key=lambda r: (r[x], r[y])):
        if best is None or row[y] < best:
            front.append(row)
            best = row[y]
    return front


def build_report(folder) -> dict:
    """Write ``pareto_<workload>.png`` / ``.csv`` and ``summary.md`` into ``folder``; returns what was
    written and the counts. ``ValueError`` if ``folder`` holds no sweep results."""
    store = ResultStore(folder)
    meta = store.read_sidecar()
    every = store.rows()
    rows = [r for r in every if r["code_version"] == meta["code_version"]]
    by_workload = defaultdict(list)
    for row in rows:
        by_workload[row["workload"]].append(row)
    workloads = {}
    for name, group in by_workload.items():
        ok = [r for r in group if r["status"] == "ok"]
        front = pareto_front(ok)
        entry = {"kind": group[0]["kind"], "points": len(group), **Counter(r["status"] for r in group),
                 "front": front, "plot": None, "table": None}
        if front:
            entry["table"] = str(_write_front(store.folder / f"pareto_{name}.csv", front))
            entry["plot"] = str(_plot(store.folder / f"pareto_{name}.png", name, ok, front))
        workloads[name] = entry
    by_key = {r["key"]: r for r in rows}
    checks = [{**by_key[c["key"]], **c} for c in store.checks.rows() if c["key"] in by_key]
    summary = store.folder / "summary.md"
    summary.write_text(_markdown(meta, rows, len(every) - len(rows), workloads) + _checks_markdown(checks))
    counts = Counter(r["status"] for r in rows)
    return {"summary": str(summary), "rows": len(rows), "older_rows": len(every) - len(rows),
            "ok": counts["ok"], "failed": counts["failed"], "unsupported": counts["unsupported"],
            "checks": {**Counter(c["status"] for c in checks), "points": len(checks),
                       "configs": len({_config_of(c) for c in checks})},
            "workloads": {name: {**{k: v for k, v in w.items() if k != "front"},
                                 "front": [r["key"] for r in w["front"]]} for name, w in workloads.items()}}


_CONFIG = ("array", "dataflow", "precision", "act_depth", "wgt_depth", "acc_depth", "bus_bytes", "energy")


def _config_of(row: dict) -> tuple:
    return tuple(row[name] for name in _CONFIG)


def _checks_markdown(checks: list) -> str:
    if not checks:
        return ""
    counts = Counter(c["status"] for c in checks)
    lines = ["## Verilator spot-checks", "",
             f"{len(checks)} points on {len({_config_of(c) for c in checks})} configuration(s) rerun on the RTL: "
             f"{counts['equal']} with every counter and the outputs equal to the golden model's, "
             f"{counts['differ']} differ, {counts['failed']} failed.", "",
             "| workload | array | dataflow | precision | act/wgt/acc words | status | differs / error | s |",
             "|---|---|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c['workload']} | {c['array']} | {c['dataflow']} | {c['precision']} | {c['act_depth']}/"
                     f"{c['wgt_depth']}/{c['acc_depth']} | {c['status']} | "
                     f"{(c['differ'] or c['error'] or '').replace('|', '/')} | {c['wall_s']:.1f} |")
    return "\n".join(lines) + "\n"


def _write_front(path: Path, front: list) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(_FRONT_COLUMNS)
        for row in front:
            writer.writerow([row[c] for c in _FRONT_COLUMNS])
    return path


def _plot(path: Path, name: str, ok: list, front: list) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    largest = max(r["mac_units"] for r in ok)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    kib = [r["sram_bytes"] / 1024 for r in ok]
    dots = ax.scatter([r["cycles"] for r in ok], [r["energy_fj"] / 1e6 for r in ok], c=kib,
                      s=[12 + 88 * r["mac_units"] / largest for r in ok], cmap="viridis", alpha=0.75,
                      norm=LogNorm(min(kib), max(kib)) if min(kib) < max(kib) else None, edgecolors="none")
    ax.step([r["cycles"] for r in front], [r["energy_fj"] / 1e6 for r in front], where="post", color="crimson",
            linewidth=1.2, label=f"Pareto front ({len(front)} points)")
    ax.scatter([r["cycles"] for r in front], [r["energy_fj"] / 1e6 for r in front], s=40, facecolors="none",
               edgecolors="crimson", linewidths=1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency (cycles)")
    ax.set_ylabel("energy (nJ)")
    ax.set_title(f"{name}: {len(ok)} configurations (dot size: MAC units, up to {largest})")
    fig.colorbar(dots, ax=ax, label="SRAM (KiB)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _markdown(meta: dict, rows: list, older: int, workloads: dict) -> str:
    counts = Counter(r["status"] for r in rows)
    lines = [f"# Sweep {meta['name']}", "",
             f"Spec `{meta['spec']}`, code version `{meta['code_version']}`: {len(rows)} of {meta['points']} "
             f"points recorded ({counts['ok']} ok, {counts['failed']} failed, {counts['unsupported']} unsupported)"
             + (f"; {older} rows of other code versions ignored" if older else "") + ".",
             "Cycles and counters from the golden model (cycle-exact with the RTL); energy from the "
             "configuration's energy table. Front: no other point of the workload has both fewer cycles and "
             "less energy.", ""]
    for name, w in workloads.items():
        lines += [f"## {name} ({w['kind']})", "",
                  f"{w['points']} points: {w.get('ok', 0)} ok, {w.get('failed', 0)} failed, "
                  f"{w.get('unsupported', 0)} unsupported.", ""]
        if not w["front"]:
            lines += ["No point ran: no front.", ""]
            continue
        lines += [f"![{name}]({Path(w['plot']).name})", "",
                  "| array | dataflow | precision | act/wgt/acc words | bus B | energy table | cycles | util | "
                  "bound | energy nJ | DMA in/out B | SRAM KiB | MACs | fits |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in w["front"]:
            lines.append(f"| {r['array']} | {r['dataflow']} | {r['precision']} | {r['act_depth']}/{r['wgt_depth']}/"
                         f"{r['acc_depth']} | {r['bus_bytes']} | {r['energy']} | {r['cycles']} | "
                         f"{r['utilization']:.1%} | {r['bound']} | {r['energy_fj'] / 1e6:.2f} | "
                         f"{r['dma_in_bytes']}/{r['dma_out_bytes']} | {r['sram_bytes'] / 1024:g} | "
                         f"{r['mac_units']} | {'yes' if r['fits'] else 'no'} |")
        lines.append("")
    problems = Counter((r["status"], r["workload"], r["error"]) for r in rows if r["status"] != "ok")
    if problems:
        lines += ["## Failed and unsupported points", "", "| status | workload | points | reason |", "|---|---|---|---|"]
        for (status, workload, error), n in sorted(problems.items()):
            lines.append(f"| {status} | {workload} | {n} | {error.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)
