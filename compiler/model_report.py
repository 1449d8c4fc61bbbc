"""Model -> report inputs: one ``GemmSpec`` per layer (with the activations the layer really sees) and
the whole model's counters compiled with and without on-chip chaining."""
from __future__ import annotations

import numpy as np

from opennpu.config import NpuConfig

from .gemm import GemmSpec
from .model_program import compile_model, run_model
from .onnx_import import import_onnx
from .report import Layer

__all__ = ["model_layers", "random_input"]


def random_input(qmodel, batch: int, seed: int = 0) -> np.ndarray:
    """A batch of random int8 values on ``qmodel``'s input grid, in its input format (float32 models get
    the dequantized values). Cycles, bytes and energy do not depend on the values."""
    shape = (qmodel.input.batch or batch, *qmodel.input.shape)
    q = np.random.default_rng(seed).integers(-128, 128, size=shape)
    if qmodel.input.dtype == "float32":
        return ((q - qmodel.input.zero_point) * qmodel.input.scale).astype(np.float32)
    return (q + (128 if qmodel.input.dtype == "uint8" else 0)).astype(qmodel.input.dtype)


def model_layers(model, config: NpuConfig, inputs=None, batch: int = 8, seed: int = 0):
    """``(layers, {"fused": counters, "unfused": counters})`` for ``model`` (ONNX path/bytes/proto).

    ``inputs``: a batch in the model's input format; default: random int8 values on the input grid
    (the report is about cycles, bytes and energy, which do not depend on the values).
    """
    qmodel = import_onnx(model)
    if inputs is None:
        inputs = random_input(qmodel, batch, seed)
    t = qmodel.quantize_input(inputs)
    layers = []
    for layer in qmodel.layers:
        x = t.reshape(len(t), *layer.in_shape)
        layers.append(Layer(layer.name, GemmSpec(layer.matrix(x), layer.w, layer.bias, layer.multiplier,
                                                 layer.shift, layer.out_zp, layer.qmin, layer.qmax, layer.lut)))
        t = layer.reference(x)
    counters = {}
    for name, fuse in (("fused", True), ("unfused", False)):
        compiled = compile_model(qmodel, config, batch=len(inputs), fuse=fuse)
        counters[name] = run_model(compiled, inputs).counters
    return layers, counters
