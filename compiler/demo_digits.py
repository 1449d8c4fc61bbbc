"""End-to-end demo: train a small MLP and a small CNN on scikit-learn's bundled 8x8 digits, quantize them
to int8 (onnxruntime ``quantize_static``, QDQ), compile them for the NPU and run the whole test set on the
golden model (and on the RTL through Verilator when that backend is available; a few samples on the
Amaranth simulator). Prints accuracy next to onnxruntime's on the same quantized model, the largest
output difference in LSBs, argmax agreement, and cycles / energy / DMA bytes with and without on-chip
chaining.

Run: ``python -m opennpu.compiler.demo_digits`` (needs torch, onnx, onnxruntime, scikit-learn; about a
minute on a laptop CPU). Deterministic: fixed seeds, fixed split.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from opennpu.config import NpuConfig, parse_array

__all__ = ["load_digits", "train_mlp", "train_cnn", "evaluate", "main"]

SEED = 0


def load_digits() -> tuple:
    """(x_train, y_train, x_test, y_test): pixels scaled to [0, 1] as float32 (N, 64), stratified 80/20
    split with a fixed seed."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split
    data = sk_digits()
    x = (data.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, data.target, test_size=0.2, random_state=SEED,
                                                        stratify=data.target)
    return x_train, y_train, x_test, y_test


def _train(model, x, y, epochs: int, lr: float):
    import torch
    torch.manual_seed(SEED)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def train_mlp(x, y, epochs: int = 40):
    """64 -> 32 (ReLU) -> 10 on flat pixels."""
    import torch
    torch.manual_seed(SEED)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    return _train(model, x, y, epochs, 0.01)


def train_cnn(x, y, epochs: int = 40):
    """conv 3x3, 8 channels (ReLU) -> flatten -> 10 on (1, 8, 8) images."""
    import torch
    torch.manual_seed(SEED)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 6 * 6, 10))
    return _train(model, x.reshape(-1, 1, 8, 8), y, epochs, 0.01)


def evaluate(name: str, onnx_bytes: bytes, x: np.ndarray, y: np.ndarray, config: NpuConfig,
             float_logits: np.ndarray) -> dict:
    """Run ``onnx_bytes`` on onnxruntime and on the NPU golden model (fused and unfused); figures dict."""
    from .model_program import compile_model, run_model
    from .onnx_import import import_onnx, onnxruntime_session
    qm = import_onnx(onnx_bytes)
    session = onnxruntime_session(onnx_bytes)
    y_ort = session.run(None, {qm.input.name: x})[0]
    compiled = compile_model(qm, config, batch=len(x))
    start = time.perf_counter()
    run = run_model(compiled, x, "golden")
    wall = time.perf_counter() - start
    unfused = run_model(compile_model(qm, config, batch=len(x), fuse=False), x, "golden")
    lsb = np.abs(qm.output_lsb(run.outputs) - qm.output_lsb(y_ort))
    c, u = run.counters, unfused.counters
    return {
        "name": name, "model": qm, "compiled": compiled, "run": run, "x": x, "samples": len(x),
        "acc_float": float((float_logits.argmax(1) == y).mean()),
        "acc_ort": float((y_ort.argmax(1) == y).mean()), "acc_npu": float((run.outputs.argmax(1) == y).mean()),
        "argmax_agree": float((run.outputs.argmax(1) == y_ort.argmax(1)).mean()),
        "max_lsb": int(lsb.max()), "lsb_off": int((lsb > 0).sum()), "outputs": int(lsb.size),
        "bit_exact_reference": bool(np.array_equal(run.values, qm.reference(x))),
        "cycles": c["cycles"], "utilization": c["macs"] / (c["cycles"] * config.rows * config.cols),
        "energy_uj": c["energy_fj"] / 1e9, "dma_bytes": c["dma_in_bytes"] + c["dma_out_bytes"],
        "unfused_cycles": u["cycles"], "unfused_energy_uj": u["energy_fj"] / 1e9,
        "unfused_dma_bytes": u["dma_in_bytes"] + u["dma_out_bytes"], "programs": compiled.stages,
        "golden_wall_s": wall,
    }


def _print(r: dict, config: NpuConfig):
    print(f"\n== {r['name']}: {len(r['model'].layers)} layers, {r['samples']} test digits, "
          f"{config.array} array, {r['programs']} program(s)")
    print(f"  accuracy      float {r['acc_float']:.2%}   onnxruntime int8 {r['acc_ort']:.2%}   "
          f"NPU {r['acc_npu']:.2%}")
    print(f"  vs onnxruntime max |diff| {r['max_lsb']} LSB ({r['lsb_off']} of {r['outputs']} outputs differ), "
          f"argmax agreement {r['argmax_agree']:.2%}; bit-exact with the integer reference: "
          f"{r['bit_exact_reference']}")
    print(f"  NPU (fused)   {r['cycles']} cycles, utilization {r['utilization']:.1%}, energy {r['energy_uj']:.2f} uJ, "
          f"DMA {r['dma_bytes']} bytes")
    print(f"  unfused       {r['unfused_cycles']} cycles, energy {r['unfused_energy_uj']:.2f} uJ, "
          f"DMA {r['unfused_dma_bytes']} bytes  -> chaining saves {r['unfused_dma_bytes'] - r['dma_bytes']} bytes "
          f"({1 - r['dma_bytes'] / r['unfused_dma_bytes']:.0%})")


def _rtl(results: list, pysim_samples: int, pysim_array: str):
    from opennpu.sim.driver import BackendUnavailable

    from .model_program import compile_model, run_model
    for r in results:
        start = time.perf_counter()
        try:
            run = run_model(r["compiled"], r["x"], "verilator")
        except (BackendUnavailable, ImportError) as error:
            print(f"  verilator     {r['name']}: backend unavailable ({error})")
            break
        same = np.array_equal(run.values, r["run"].values) and run.counters == r["run"].counters
        print(f"  verilator     {r['name']}: {r['samples']} digits in {time.perf_counter() - start:.1f} s, "
              f"outputs and counters identical to golden: {same}")
    if pysim_samples:
        mlp = results[0]
        rows, cols = parse_array(pysim_array)
        config = NpuConfig(rows=rows, cols=cols, act_depth=256, wgt_depth=256, acc_depth=64)
        compiled = compile_model(mlp["model"], config, batch=pysim_samples)
        x = mlp["x"][:pysim_samples]
        golden = run_model(compiled, x, "golden")
        start = time.perf_counter()
        try:
            run = run_model(compiled, x, "pysim")
        except (BackendUnavailable, ImportError) as error:
            print(f"  pysim         unavailable ({error})")
            return
        same = np.array_equal(run.values, golden.values) and run.counters == golden.counters
        print(f"  pysim         {mlp['name']} on {config.array}: {pysim_samples} digits, {run.counters['cycles']} "
              f"cycles in {time.perf_counter() - start:.1f} s, outputs and counters identical to golden: {same}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m opennpu.compiler.demo_digits", description=__doc__.split("\n\n")[0])
    parser.add_argument("--array", default="8x8", help="systolic array RxC for the full test set")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--pysim-samples", type=int, default=4, help="MLP digits on the Amaranth simulator (0: skip)")
    parser.add_argument("--pysim-array", default="4x4")
    parser.add_argument("--no-rtl", action="store_true", help="skip the Verilator and pysim runs")
    parser.add_argument("--save", metavar="DIR", help="also write the quantized models as DIR/digits_mlp.onnx "
                        "and DIR/digits_cnn.onnx (e.g. for `opennpu report`)")
    args = parser.parse_args(argv)
    import torch

    from .torch_quant import quantize_torch
    rows, cols = parse_array(args.array)
    config = NpuConfig(rows=rows, cols=cols)
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_digits()
    mlp = train_mlp(x_train, y_train, args.epochs)
    cnn = train_cnn(x_train, y_train, args.epochs)
    calib = x_train[:256]
    models = [("MLP 64-32-10", quantize_torch(mlp, calib), x_test, mlp),
              ("CNN conv3x3x8-fc10", quantize_torch(cnn, calib.reshape(-1, 1, 8, 8)), x_test.reshape(-1, 1, 8, 8), cnn)]
    print(f"trained and quantized 2 models on {len(x_train)} digits in {time.perf_counter() - start:.1f} s")
    if args.save:
        from pathlib import Path
        folder = Path(args.save)
        folder.mkdir(parents=True, exist_ok=True)
        for (_, blob, _, _), stem in zip(models, ("digits_mlp", "digits_cnn")):
            (folder / f"{stem}.onnx").write_bytes(blob)
        print(f"saved {folder}/digits_mlp.onnx and {folder}/digits_cnn.onnx")
    results = []
    for name, blob, x, net in models:
        with torch.no_grad():
            logits = net(torch.as_tensor(x)).numpy()
        r = evaluate(name, blob, x, y_test, config, logits)
        _print(r, config)
        results.append(r)
    if not args.no_rtl:
        print("\n== RTL")
        _rtl(results, args.pysim_samples, args.pysim_array)
    ok = all(r["max_lsb"] <= 1 and r["bit_exact_reference"] for r in results)
    print(f"\n{'PASS' if ok else 'FAIL'}: NPU within 1 LSB of onnxruntime, bit-exact with the integer "
          f"reference ({time.perf_counter() - start:.1f} s total)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
