"""NPU vs GPU report: per-layer cycles, latency, energy breakdown, precision comparison, roofline.

Every number comes from a run: NPU figures from the golden model's counters (cycle-exact with the RTL,
see tests/test_rtl.py), GPU/CPU figures from timing the PyTorch reference of the same integer layer,
whose outputs are checked bit-exact against the NPU's. ``write_report`` writes ``report.md`` and PNG
plots into a folder and returns the numbers as a dict.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opennpu.config import PRECISIONS, NpuConfig
from opennpu.golden.model import GoldenNpu, event_costs
from opennpu.golden.isa import Precision

from .gemm import GemmSpec, build_gemm

__all__ = ["Layer", "layer_figures", "gpu_figures", "write_report", "int4_variant"]

#: Default clocks (nominal, not measured): pass ``fpga_mhz`` / ``asic_mhz`` to override.
DEFAULT_FPGA_MHZ = 50.0
DEFAULT_ASIC_MHZ = 1000.0


@dataclass
class Layer:
    name: str
    spec: GemmSpec


def int4_variant(spec: GemmSpec, precision: str) -> GemmSpec:
    """The same layer with operands requantized to the int4 ranges of ``precision`` (shapes and
    requant parameters unchanged: cycles, bytes and energy are what the comparison is about)."""
    p = Precision.from_label(precision)
    a = spec.a if p != Precision.A4W4 else np.clip(np.rint(spec.a / 16.0), -8, 7).astype(np.int64)
    w = spec.w if p == Precision.INT8 else np.clip(np.rint(spec.w / 16.0), -8, 7).astype(np.int64)
    lo, hi = (-8, 7) if p == Precision.A4W4 else (spec.qmin, spec.qmax)
    lut = None if spec.lut is None else np.clip(spec.lut, lo, hi)
    return GemmSpec(a, w, spec.bias, spec.multiplier, spec.shift, int(np.clip(spec.out_zp, lo, hi)),
                    max(spec.qmin, lo), min(spec.qmax, hi), lut, p)


def layer_figures(config: NpuConfig, spec: GemmSpec, fpga_mhz: float, asic_mhz: float) -> dict:
    """Run one layer on the golden model: counters, latency at two clocks, energy breakdown (pJ)."""
    gp = build_gemm(config, spec)
    result = GoldenNpu(config).run(gp.program)
    c = result.counters
    cost = event_costs(config, spec.precision)
    breakdown = {
        "macs": c["macs"] * cost["macs"],
        "act_sram": (c["act_reads"] + c["act_writes"]) * cost["act_reads"],
        "wgt_sram": (c["wgt_reads"] + c["wgt_writes"]) * cost["wgt_reads"],
        "acc_sram": (c["acc_reads"] + c["acc_writes"]) * cost["acc_reads"],
        "dma": (c["dma_in_bytes"] + c["dma_out_bytes"]) * cost["dma_in_bytes"],
        "activation": c["act_ops"] * cost["act_ops"],
    }
    assert sum(breakdown.values()) == c["energy_fj"], "energy breakdown must add up to the counter"
    m, k, n = spec.shape
    macs = m * k * n            # the layer's MACs (the counter also has a transposed program's bias digits)
    dma = c["dma_in_bytes"] + c["dma_out_bytes"]
    return {
        "shape": [m, k, n], "precision": spec.precision.label, "cycles": c["cycles"], "macs": macs,
        "utilization": macs / (c["cycles"] * config.rows * config.cols),
        "latency_fpga_us": c["cycles"] / fpga_mhz, "latency_asic_us": c["cycles"] / asic_mhz,
        "energy_pj": c["energy_fj"] / 1000, "energy_breakdown_pj": {k_: v / 1000 for k_, v in breakdown.items()},
        "dma_bytes": dma, "weight_bytes": c["wgt_writes"] * config.wgt_word_bytes,
        "ops_per_byte": 2 * macs / dma, "ops_per_cycle": 2 * macs / c["cycles"],
        "outputs": gp.decode_output(result.outputs),
    }


def gpu_figures(spec: GemmSpec, npu_outputs: np.ndarray, device: str | None = None) -> dict:
    """Time the PyTorch reference of the layer (CUDA events on a GPU, wall clock on the CPU); on CUDA
    also read NVML's energy counter. Outputs must equal the NPU's bit for bit."""
    from opennpu.golden.reference import gemm_reference, reference_device, time_gemm, time_int8_matmul
    dev = reference_device(device)
    args = (spec.a, spec.w, spec.bias, spec.multiplier, spec.shift, spec.out_zp, spec.qmin, spec.qmax, spec.lut)
    exact = bool(np.array_equal(gemm_reference(*args, device=dev, single_round=spec.single_round), npu_outputs))
    seconds = time_gemm(*args, device=dev)
    figures = {"device": dev, "latency_us": seconds * 1e6, "bit_exact": exact, "energy_uj": None}
    if dev.startswith("cuda"):
        figures.update(_nvml_energy(args, dev))
        m, k = spec.a.shape
        figures.update(time_int8_matmul(m, k, spec.w.shape[1], dev))
    return figures


def _nvml_energy(args, device: str, repeat: int = 50, min_seconds: float = 2.0) -> dict:
    """Energy per call from NVML's total-energy counter: at least ``repeat`` calls and ``min_seconds``
    of them (the counter has mJ resolution and updates only every few tens of ms; measured on an H100:
    50 calls of 1.3 ms read as 0 mJ). Whole-board energy, idle power included; ``gpu_power_w`` is the
    average over the run."""
    try:
        import pynvml
        import torch
    except ImportError:
        return {"energy_note": "nvidia-ml-py not installed"}
    from opennpu.golden.reference import gemm_reference
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(torch.device(device).index or 0)
    torch.cuda.synchronize()
    start, calls, t0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle), 0, time.perf_counter()
    while calls < repeat or time.perf_counter() - t0 < min_seconds:
        gemm_reference(*args, device=device)
        calls += 1
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    used_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) - start
    return {"energy_uj": used_mj * 1000 / calls, "gpu_power_w": used_mj / 1000 / seconds,
            "gpu_name": pynvml.nvmlDeviceGetName(handle)}


def write_report(layers: list[Layer], config: NpuConfig, out_dir: str | Path, *, fpga_mhz: float | None = None,
                 asic_mhz: float = DEFAULT_ASIC_MHZ, gpu: bool = True, fused: dict | None = None,
                 title: str = "model", progress: bool = True, host_ops: list | None = None) -> dict:
    """Measure every layer, write ``report.md`` + plots into ``out_dir``, return the numbers.

    ``host_ops``: optional ``{"name", "op", "device", "bytes"}`` of a graph's ops outside the GEMM layers:
    those on the host (``cpu``) and its elementwise ADDs on the NPU (``npu``).

    ``progress``: show a progress bar on stderr while measuring (only where stderr is a terminal).

    ``fused``: optional ``{"fused": counters, "unfused": counters}`` of the whole model compiled with
    and without on-chip activation chaining (from the model compiler).
    """
    for name, mhz in (("fpga_mhz", fpga_mhz), ("asic_mhz", asic_mhz)):
        if mhz is not None and not mhz > 0:             # also refuses nan
            raise ValueError(f"{name} must be > 0, got {mhz}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rich.console import Console
    from rich.progress import Progress

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fpga_mhz = DEFAULT_FPGA_MHZ if fpga_mhz is None else fpga_mhz
    config = config.with_(precisions=PRECISIONS)
    rows, precisions = [], {}
    with Progress(transient=True, disable=not progress, console=Console(stderr=True)) as progress:
        task = progress.add_task("measuring layers", total=len(layers) * (len(PRECISIONS) + int(gpu)))
        for layer in layers:
            figures = layer_figures(config, layer.spec, fpga_mhz, asic_mhz)
            progress.advance(task)
            if gpu:
                figures["gpu"] = gpu_figures(layer.spec, figures["outputs"])
                progress.advance(task)
            figures.pop("outputs")
            rows.append({"name": layer.name, **figures})
            for p in PRECISIONS[1:]:
                variant = layer_figures(config, int4_variant(layer.spec, p), fpga_mhz, asic_mhz)
                variant.pop("outputs")
                precisions.setdefault(layer.name, {"int8": figures})[p] = variant
                progress.advance(task)

    total = {key: sum(r[key] for r in rows) for key in ("cycles", "macs", "energy_pj", "dma_bytes")}
    report = {"title": title, "array": config.array, "bus_bytes": config.bus_bytes, "fpga_mhz": fpga_mhz,
              "asic_mhz": asic_mhz, "energy_table": config.energy.name, "layers": rows, "total": total,
              "precisions": {name: {p: {k: v[k] for k in ("cycles", "weight_bytes", "energy_pj", "dma_bytes")}
                                    for p, v in by_p.items()} for name, by_p in precisions.items()},
              "fused": fused, "host_ops": host_ops}
    _plots(plt, out, rows, precisions, config, fused)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "report.md").write_text(_markdown(report))
    return report


def _save(plt, fig, path: Path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plots(plt, out: Path, rows, precisions, config, fused):
    names = [r["name"] for r in rows]
    parts = list(rows[0]["energy_breakdown_pj"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bottom = np.zeros(len(rows))
    for part in parts:
        values = np.array([r["energy_breakdown_pj"][part] / 1e6 for r in rows])
        ax.bar(names, values, bottom=bottom, label=part)
        bottom += values
    ax.set_ylabel("energy (uJ)")
    ax.set_title(f"NPU energy per layer ({config.array}, {config.energy.name})")
    ax.legend(fontsize=7)
    _save(plt, fig, out / "energy_breakdown.png")

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for i, key in enumerate(("cycles", "energy_pj")):
        for j, p in enumerate(PRECISIONS):
            axes[i].bar(np.arange(len(names)) + 0.27 * (j - 1), [precisions[nm][p][key] for nm in names],
                        width=0.27, label=p)
        axes[i].set_xticks(np.arange(len(names)), names, fontsize=7)
        axes[i].set_title(key)
    axes[0].legend(fontsize=7)
    _save(plt, fig, out / "precisions.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    intensity = np.logspace(-1, 3, 200)
    peak = 2 * config.rows * config.cols
    ax.loglog(intensity, np.minimum(peak, intensity * config.bus_bytes), "k-", label="roofline")
    for r in rows:
        ax.loglog(r["ops_per_byte"], r["ops_per_cycle"], "o", label=r["name"])
    ax.set_xlabel("ops per DMA byte")
    ax.set_ylabel("ops per cycle")
    ax.set_title(f"roofline: peak {peak} ops/cycle, {config.bus_bytes} B/cycle")
    ax.legend(fontsize=7)
    _save(plt, fig, out / "roofline.png")

    if fused:
        fig, ax = plt.subplots(figsize=(5, 3))
        labels = list(fused)
        ax.bar(labels, [fused[k]["dma_in_bytes"] + fused[k]["dma_out_bytes"] for k in labels])
        ax.set_ylabel("DMA bytes")
        ax.set_title("on-chip fusion")
        _save(plt, fig, out / "fusion.png")


def _markdown(report: dict) -> str:
    lines = [f"# NPU report: {report['title']}", "",
             f"Array {report['array']} weight-stationary, data bus {report['bus_bytes']} B/cycle, energy "
             f"table `{report['energy_table']}`. Latency at {report['fpga_mhz']:.0f} MHz (FPGA) and "
             f"{report['asic_mhz']:.0f} MHz (ASIC clock). NPU figures: golden model counters "
             f"(cycle-exact with the RTL).", "",
             "| layer | M,K,N | cycles | util | FPGA us | ASIC us | energy uJ | MACs | SRAM | DMA | act | "
             "GPU/CPU us | GPU uJ | device | bit-exact |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in report["layers"]:
        b = r["energy_breakdown_pj"]
        sram = b["act_sram"] + b["wgt_sram"] + b["acc_sram"]
        gpu = r.get("gpu") or {}
        lines.append(
            f"| {r['name']} | {','.join(map(str, r['shape']))} | {r['cycles']} | {r['utilization']:.1%} | "
            f"{r['latency_fpga_us']:.1f} | {r['latency_asic_us']:.2f} | {r['energy_pj'] / 1e6:.3f} | "
            f"{b['macs'] / 1e6:.3f} | {sram / 1e6:.3f} | {b['dma'] / 1e6:.3f} | {b['activation'] / 1e6:.3f} | "
            f"{gpu.get('latency_us', float('nan')):.1f} | "
            f"{'-' if gpu.get('energy_uj') is None else format(gpu['energy_uj'], '.0f')} | "
            f"{gpu.get('gpu_name') or gpu.get('device', '-')} | {gpu.get('bit_exact', '-')} |")
    t = report["total"]
    lines += ["", f"Total: {t['cycles']} cycles, {t['macs']} MACs, {t['energy_pj'] / 1e6:.3f} uJ, "
                  f"{t['dma_bytes']} DMA bytes.", "",
              "![energy](energy_breakdown.png)", "", "## INT8 vs A8W4 vs A4W4", "",
              "| layer | precision | cycles | weight bytes | energy uJ |", "| --- | --- | ---: | ---: | ---: |"]
    for name, by_p in report["precisions"].items():
        for p, v in by_p.items():
            lines.append(f"| {name} | {p} | {v['cycles']} | {v['weight_bytes']} | {v['energy_pj'] / 1e6:.3f} |")
    lines += ["", "![precisions](precisions.png)", "", "## Roofline", "", "![roofline](roofline.png)", ""]
    if report["fused"]:
        lines += ["## Fused vs unfused (whole model)", "", "| variant | cycles | DMA bytes | energy uJ |",
                  "| --- | ---: | ---: | ---: |"]
        for k, c in report["fused"].items():
            lines.append(f"| {k} | {c['cycles']} | {c['dma_in_bytes'] + c['dma_out_bytes']} | "
                         f"{c['energy_fj'] / 1e9:.3f} |")
        lines += ["", "![fusion](fusion.png)", ""]
    if report["host_ops"]:
        lines += ["## Ops on the host, and ADDs on the NPU", "", "The graph's other ops run on the host kernels "
                  "(numpy, bit-exact with the source format's reference), and its ADDs on the NPU as elementwise "
                  "ACTIVATEs (no GEMM to compare; `opennpu run` reports their cycles); each reads and writes "
                  "these bytes (inputs + output):", "",
                  "| op | kind | runs on | bytes |", "| --- | --- | --- | ---: |"]
        lines += [f"| {h['name']} | {h['op']} | {h['device']} | {h['bytes']} |" for h in report["host_ops"]]
        lines.append("")
    tuned = [r for r in report["layers"] if (r.get("gpu") or {}).get("int8_kernel_us") is not None]
    if tuned:
        lines += ["## The GPU's own INT8 GEMM", "",
                  "`torch._int_mm` (int8 x int8 -> int32 on tensor cores), operands already on the GPU, no "
                  "bias/requantization/activation, shape padded to what the kernel accepts: the GPU's best "
                  "case for the multiply part of each layer.", "",
                  "| layer | padded M,K,N | GPU INT8 kernel us | NPU ASIC us |", "| --- | --- | ---: | ---: |"]
        for r in tuned:
            g = r["gpu"]
            lines.append(f"| {r['name']} | {','.join(map(str, g['padded_shape']))} | {g['int8_kernel_us']:.1f} | "
                         f"{r['latency_asic_us']:.2f} |")
        lines.append("")
    lines += ["GPU/CPU latency: the PyTorch reference of the same integer layer (CUDA events on a GPU, "
              "wall clock on the CPU, host transfers included): a bit-exact emulation (float64 matmul, "
              "int64 requantization ops), not a tuned INT8 kernel. GPU uJ: NVML whole-board energy per "
              "call (idle power included). `bit-exact` compares its outputs with the NPU's.", ""]
    return "\n".join(lines)
