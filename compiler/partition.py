"""Partition a graph IR ``Graph`` into segments for the NPU and the host CPU.

This is the interface only: ``partition`` marks the ops the NPU is meant to run (convolutions and
fully connected layers, ``NPU_CANDIDATES``) and groups consecutive nodes (in topological order) of the
same placement into ``Segment``s. No segment is lowered to NPU programs yet: the runner executes every
segment on the host kernels and reports each op with device ``cpu``.
"""
from __future__ import annotations

from dataclasses import dataclass

from .graph import Graph

__all__ = ["NPU_CANDIDATES", "Segment", "partition"]

#: graph IR ops with a planned NPU mapping
NPU_CANDIDATES = frozenset({"conv2d", "depthwise_conv2d", "fully_connected"})


@dataclass(frozen=True)
class Segment:
    """Consecutive nodes with one placement: ``device`` ``"npu"`` (candidates) or ``"cpu"``."""
    device: str
    nodes: tuple


def partition(graph: Graph, npu_ops=NPU_CANDIDATES) -> list:
    """The nodes of ``graph`` in order, split into segments wherever the placement changes."""
    segments: list = []
    for node in graph.nodes:
        device = "npu" if node.op in npu_ops else "cpu"
        if segments and segments[-1].device == device:
            segments[-1] = Segment(device, segments[-1].nodes + (node,))
        else:
            segments.append(Segment(device, (node,)))
    return segments
