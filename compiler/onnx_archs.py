"""Standard small architectures as users export them: PyTorch modules (eval mode, BatchNorm folded by the
exporter) quantized by onnxruntime's ``quantize_static`` (QDQ, int8, per tensor or per channel), and
their comparison with onnxruntime, for the tests and ``benchmarks/bench_onnx.py``.

Each class is one family the ONNX issue names: LeNet (conv + max pool), a small ResNet (basic blocks,
residual adds, global average pool), MobileNetV2 inverted residuals (expand, depthwise, project, add),
a depthwise-separable chain, a Conv1d audio net (grouped conv, 1-D pools), an MLP, an MLP on a
sequence (MatMul on batch x sequence x features, a residual add) a transformer encoder block
(multi-head self-attention, LayerNorm, GELU MLP) and an MLP-Mixer block. Exported with opset 17 (LayerNormalization as one op).
"""
from __future__ import annotations

import io
import warnings

import numpy as np

__all__ = ["ARCHITECTURES", "build", "compare"]


def _modules():
    import torch
    from torch import nn

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 3), nn.ReLU(),
                                   nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 2 * 2, 32), nn.ReLU(), nn.Linear(32, 10))

        def forward(self, x):
            return self.f(x)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(),
                                      nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout))
            self.skip = nn.Sequential() if stride == 1 and cin == cout else \
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride), nn.BatchNorm2d(cout))

        def forward(self, x):
            return torch.relu(self.body(x) + self.skip(x))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(), Block(8, 8, 1), Block(8, 16, 2),
                                   nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

        def forward(self, x):
            return self.f(x)

    class InvertedResidual(nn.Module):
        def __init__(self, c, expand):
            super().__init__()
            e = c * expand
            self.f = nn.Sequential(nn.Conv2d(c, e, 1), nn.BatchNorm2d(e), nn.ReLU6(),
                                   nn.Conv2d(e, e, 3, 1, 1, groups=e), nn.BatchNorm2d(e), nn.ReLU6(),
                                   nn.Conv2d(e, c, 1), nn.BatchNorm2d(c))

        def forward(self, x):
            return x + self.f(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU6(), InvertedResidual(8, 4), InvertedResidual(8, 2),
                                   nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

        def forward(self, x):
            return self.f(x)

    class DepthwiseSeparable(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(),
                                   nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.ReLU(), nn.Conv2d(16, 24, 1), nn.ReLU(),
                                   nn.Conv2d(24, 24, 3, 1, 1, groups=24), nn.ReLU(), nn.Conv2d(24, 24, 1), nn.ReLU(),
                                   nn.AvgPool2d(4), nn.Flatten(), nn.Linear(24 * 2 * 2, 12))

        def forward(self, x):
            return self.f(x)

    class Audio1d(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Conv1d(8, 16, 5, 2, 2), nn.ReLU(), nn.Conv1d(16, 16, 3, 1, 1, groups=4), nn.ReLU(),
                                   nn.MaxPool1d(2), nn.Conv1d(16, 24, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                                   nn.Flatten(), nn.Linear(24, 6))

        def forward(self, x):
            return self.f(x)

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 48), nn.ReLU(), nn.Linear(48, 10))

        def forward(self, x):
            return self.f(x)

    class SequenceMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down = nn.Linear(24, 48), nn.Linear(48, 24)

        def forward(self, x):
            return x + self.down(torch.relu(self.up(x)))

    class TransformerBlock(nn.Module):
        """A post-norm encoder block: multi-head self-attention (Q, K, V, output projections; per head
        Q·Kᵀ / sqrt(d_head), softmax, attention·V), residual, LayerNorm, a GELU MLP (Erf form),
        residual, LayerNorm."""

        def __init__(self, d=32, heads=4):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
            self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.gelu = nn.GELU()
            self.d, self.heads = d, heads

        def forward(self, x):
            s, dh = x.shape[1], self.d // self.heads

            def split(t):
                return t.reshape(-1, s, self.heads, dh).transpose(1, 2)
            attention = torch.softmax(split(self.q(x)) @ split(self.k(x)).transpose(-2, -1) / dh ** 0.5, dim=-1)
            h = self.norm1(x + self.o((attention @ split(self.v(x))).transpose(1, 2).reshape(-1, s, self.d)))
            return self.norm2(h + self.down(self.gelu(self.up(h))))

    class MixerBlock(nn.Module):
        """An MLP-Mixer block: LayerNorm, a token-mixing GELU MLP across the sequence (transposed),
        residual; LayerNorm, a channel-mixing GELU MLP, residual."""

        def __init__(self, tokens=16, channels=32):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
            self.t1, self.t2 = nn.Linear(tokens, 2 * tokens), nn.Linear(2 * tokens, tokens)
            self.c1, self.c2 = nn.Linear(channels, 2 * channels), nn.Linear(2 * channels, channels)
            self.gelu = nn.GELU()

        def forward(self, x):
            x = x + self.t2(self.gelu(self.t1(self.norm1(x).transpose(1, 2)))).transpose(1, 2)
            return x + self.c2(self.gelu(self.c1(self.norm2(x))))

    return {"lenet": (LeNet, (1, 16, 16)), "resnet": (ResNet, (3, 12, 12)), "mobilenetv2": (MobileNetV2, (3, 12, 12)),
            "depthwise_separable": (DepthwiseSeparable, (1, 16, 16)), "conv1d_audio": (Audio1d, (8, 32)),
            "mlp": (MLP, (64,)), "sequence_mlp": (SequenceMLP, (16, 24)), "transformer": (TransformerBlock, (16, 32)),
            "mlp_mixer": (MixerBlock, (16, 32))}


#: the architecture names ``build`` takes
ARCHITECTURES = ("lenet", "resnet", "mobilenetv2", "depthwise_separable", "conv1d_audio", "mlp", "sequence_mlp",
                 "transformer", "mlp_mixer")


def build(name: str, per_channel: bool, samples: int = 32, seed: int = 0, qoperator: bool = False,
          dynamic: str | None = None) -> tuple[bytes, np.ndarray]:
    """(quantized ONNX bytes, float inputs) of architecture ``name``: random weights (BatchNorm
    statistics too) from ``seed``, calibrated and evaluated on ``samples`` standard-normal inputs; QDQ,
    or QLinear operators with ``qoperator``; or ``quantize_dynamic`` with weights of type ``dynamic``
    ("int8" or "uint8"; no calibration)."""
    import torch

    from .torch_quant import quantize_onnx
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    torch.manual_seed(seed)
    cls, shape = _modules()[name]
    model = cls().eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    x = np.random.default_rng(seed).standard_normal((samples, *shape)).astype(np.float32)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # the TorchScript exporter announces its deprecation
        torch.onnx.export(model, (torch.as_tensor(x[:1]),), buf, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=17)
    if dynamic is not None:
        return _quantize_dynamic(buf.getvalue(), per_channel, dynamic), x
    return quantize_onnx(buf.getvalue(), x, per_channel=per_channel, qoperator=qoperator, input_name="x"), x


def _quantize_dynamic(blob: bytes, per_channel: bool, weight_type: str) -> bytes:
    """onnxruntime's ``quantize_dynamic`` of a float model (it reads and writes files)."""
    import os
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic
    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    if weight_type not in types:
        raise ValueError(f"dynamic weight type must be one of {', '.join(types)}, got {weight_type!r}")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "dynamic.onnx")
        with open(src, "wb") as f:
            f.write(blob)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(src, dst, per_channel=per_channel, weight_type=types[weight_type])
        with open(dst, "rb") as f:
            return f.read()


def compare(blob: bytes, x: np.ndarray, config=None, backend: str = "golden") -> dict:
    """Run a quantized model on the NPU and on onnxruntime (graph optimizations off): the LSB
    differences of the output (of a float32 output without a grid, the largest absolute difference and
    the RMS difference relative to onnxruntime's RMS; for dynamic quantization also the largest absolute
    difference from ONNX's reference evaluator, the operators' definition), whether the NPU equals the host kernels (the
    integer reference) bit for bit, and the run's figures (cycles, utilization, energy, share of MACs on
    the NPU)."""
    from .graph_report import graph_run_report
    from .onnx_import import import_onnx_graph, onnxruntime_session
    og = import_onnx_graph(blob)
    outputs, report = graph_run_report(og.graph, og.quantize_input(x), "model", backend, config)
    t = report["total"]
    ours, theirs = og.output.value(outputs[0]), onnxruntime_session(blob).run(None, {og.input.name: x})[0]
    if og.output.scale is None:      # dynamic quantization, a float last LayerNorm: compared as floats
        diff = np.abs(ours - theirs)
        figures = {"max_lsb": None, "within_1_lsb": None, "max_abs": float(diff.max()),
                   "rel_rms": float(np.sqrt((diff ** 2).mean() / (theirs ** 2).mean()))}
        if any(node.op == "dynamic_matmul" for node in og.graph.nodes):
            from onnx.reference import ReferenceEvaluator
            spec = ReferenceEvaluator(blob).run(None, {og.input.name: x})[0]
            figures["max_abs_vs_onnx_reference"] = float(np.abs(ours - spec).max())
    else:
        ours, theirs = og.output.lsb(ours), og.output.lsb(theirs)
        diff = np.abs(ours - theirs)
        figures = {"max_lsb": int(diff.max()), "within_1_lsb": float((diff <= 1).mean())}
    return {"ops": t["ops"], "npu_ops": t["npu_ops"], **figures,
            "argmax_agree": float((ours.argmax(-1) == theirs.argmax(-1)).mean()) if ours.ndim == 2 else None,
            "exact_vs_reference": bool(np.array_equal(og.output.value(outputs[0]), og.output.value(og.reference(x)))),
            "cycles_per_inference": t["cycles_per_inference"], "macs_per_inference": t["macs"] / len(x),
            "npu_mac_fraction": t["npu_mac_fraction"], "utilization": t["utilization"],
            "energy_nj_per_inference": t["energy_fj"] / 1e6 / len(x), "host_bytes": t["host_bytes"]}

