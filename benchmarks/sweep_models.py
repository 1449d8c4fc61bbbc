"""Write the two small quantized ONNX models the example sweep (``benchmarks/sweep_example.toml``) and the
sweep tests use: ``sweep_models/mlp.onnx`` (64 -> 64 ReLU -> 10) and ``sweep_models/cnn.onnx`` (1x8x8 ->
conv 3x3, 8 channels, ReLU -> 10). Random seeded weights, int8 QDQ calibrated on random inputs: the sweep
measures cycles, bytes and energy, which do not depend on the weights' values.

Run: ``python benchmarks/sweep_models.py`` (needs torch, onnx, onnxruntime; the files are committed).
"""
from pathlib import Path

import numpy as np


def main():
    import torch

    from opennpu.compiler.torch_quant import quantize_torch
    out = Path(__file__).parent / "sweep_models"
    out.mkdir(exist_ok=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    models = {
        "mlp": (torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)), (64,)),
        "cnn": (torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                    torch.nn.Linear(8 * 6 * 6, 10)), (1, 8, 8)),
    }
    for name, (model, shape) in models.items():
        blob = quantize_torch(model, rng.standard_normal((16, *shape)).astype(np.float32))
        (out / f"{name}.onnx").write_bytes(blob)
        print(f"wrote {out / name}.onnx ({len(blob)} bytes)")


if __name__ == "__main__":
    main()
