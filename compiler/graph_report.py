"""Run an imported graph for ``opennpu run`` and report every op: where it ran (``npu`` or ``cpu``),
its cycles, utilization, energy and DMA bytes on the NPU, or the bytes it moved on the host; and the
totals (cycles per inference = the sum over the NPU programs, MACs and the share that ran on the NPU).
"""
from __future__ import annotations

from opennpu.config import NpuConfig

from .graph import Graph
from .graph_npu import run_on_npu

__all__ = ["graph_run_report"]


def graph_run_report(graph: Graph, x, model: str, backend: str, config: NpuConfig | None = None) -> tuple:
    """Run ``graph`` for the batched input ``x`` (NPU ops on ``backend``); returns ``(outputs, report)``,
    the report a JSON-ready dict with one entry per op."""
    config = NpuConfig() if config is None else config
    outputs, layers = run_on_npu(graph, x, config, backend)
    npu = [layer for layer in layers if layer["device"] == "npu"]
    macs = sum(layer["macs"] for layer in layers)
    npu_macs = sum(layer["macs"] for layer in npu)
    cycles = sum(layer["cycles"] for layer in npu)
    total = {"ops": len(layers), "npu_ops": len(npu), "cpu_ops": len(layers) - len(npu), "macs": macs,
             "npu_mac_fraction": npu_macs / macs if macs else 0.0, "cycles": cycles,
             "cycles_per_inference": cycles / len(x),
             "utilization": npu_macs / (cycles * config.rows * config.cols) if cycles else 0.0,
             "energy_fj": sum(layer["energy_fj"] for layer in npu),
             "dma_in_bytes": sum(layer["dma_in_bytes"] for layer in npu),
             "dma_out_bytes": sum(layer["dma_out_bytes"] for layer in npu),
             "host_bytes": sum(layer["host_bytes"] for layer in layers if layer["device"] == "cpu")}
    report = {"model": model, "backend": backend, "array": f"{config.rows}x{config.cols}", "batch": len(x),
              "layers": layers, "total": total}
    return outputs, report
