"""Quantize a PyTorch model for the NPU: ONNX export + onnxruntime ``quantize_static`` (QDQ, int8,
symmetric weights, per tensor or, with ``quantize_onnx(per_channel=True)``, per output channel), the form
``onnx_import`` reads.

torch, onnx and onnxruntime are imported when called. The export uses the TorchScript-based exporter
(``dynamo=False``), which needs no extra packages, with a dynamic batch axis.
"""
from __future__ import annotations

import io
import logging
import os
import tempfile
import warnings

import numpy as np

__all__ = ["quantize_onnx", "quantize_torch"]


def quantize_onnx(float_model: bytes, calibration: np.ndarray, *, qoperator: bool = False,
                  per_channel: bool = False, input_name: str | None = None) -> bytes:
    """Float ONNX model bytes -> int8 quantized model bytes, calibrated on ``calibration`` (a batch of
    inputs, fed one sample at a time, MinMax). ``qoperator=True`` writes QLinear ops instead of QDQ.
    Activations and weights are int8, weights symmetric; weight scales per tensor, or per output channel
    with ``per_channel=True`` (Conv, MatMul and Gemm weights)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader
    model = onnx.load_from_string(float_model)
    name = input_name or [i.name for i in model.graph.input
                          if i.name not in {t.name for t in model.graph.initializer}][0]
    samples = [{name: np.asarray(x, np.float32)[None]} for x in calibration]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(samples)

        def get_next(self):
            return next(self.it, None)

    root = logging.getLogger()              # quantize_static logs pre-processing advice at WARNING
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        return _quantize(float_model, Reader(), qoperator, per_channel)
    finally:
        root.setLevel(level)


def _quantize(float_model: bytes, reader, qoperator: bool, per_channel: bool) -> bytes:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
        with open(src, "wb") as f:
            f.write(float_model)
        quantize_static(src, dst, reader, quant_format=QuantFormat.QOperator if qoperator else QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
        with open(dst, "rb") as f:
            return f.read()


def quantize_torch(model, calibration: np.ndarray, *, qoperator: bool = False) -> bytes:
    """A float ``torch.nn.Module`` (eval mode is set) -> quantized ONNX model bytes (input ``x``,
    output ``y``, dynamic batch), calibrated on ``calibration`` (array of inputs, batch first)."""
    import torch
    model = model.eval()
    example = torch.as_tensor(np.asarray(calibration[:1], np.float32))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # the TorchScript exporter announces its deprecation
        torch.onnx.export(model, (example,), buf, dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return quantize_onnx(buf.getvalue(), calibration, qoperator=qoperator, input_name="x")
