"""GPU reference: the GEMM + fused activation unit in PyTorch, bit-exact with ``opennpu.golden.numerics``.

Everything here uses integer tensor ops only (int64 tensors), so the same code runs on CUDA when one is
available and on the CPU otherwise. Arrays go in and come out as numpy int64.

* ``gemm_reference``: ``y = act(wrap32(wrap32(a @ w) + bias))`` with the gemmlowp/TFLite requantization
  (saturating left shift, SaturatingRoundingDoublingHighMul, RoundingDivideByPOT), zero point, clamp and
  optional LUT -- the semantics of ``numerics.activation_unit``.
* ``float_requant_reference``: how float-requant runtimes (PyTorch quantized ops, onnxruntime) do it:
  ``clamp(round_half_to_even((a @ w + bias) * real_scale) + out_zp)``; agrees with the fixed-point
  path within 1 LSB.

The matmul is done in float64 (CUDA has no int64 matmul): every product and partial sum is an integer,
so the result is exact while ``K * max|a| * max|w| < 2^53``; larger problems raise ``ValueError``.

torch is imported lazily, so importing this module does not need it.
"""
from __future__ import annotations

import time

import numpy as np

__all__ = ["time_int8_matmul", "reference_device", "requantize_reference", "gemm_reference", "float_requant_reference",
           "time_gemm"]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
SHIFT_MIN, SHIFT_MAX = -31, 30
_EXACT_LIMIT = 1 << 53          # float64 represents every integer below this exactly


def _torch():
    import torch
    return torch


def reference_device(device=None) -> str:
    """``device`` as a string; ``None`` picks ``"cuda"`` when available, else ``"cpu"``."""
    if device is not None:
        return str(device)
    return "cuda" if _torch().cuda.is_available() else "cpu"


# -- integer helpers on int64 tensors -----------------------------------------------------------
def _wrap32(x):
    return ((x - INT32_MIN) & 0xFFFFFFFF) + INT32_MIN


def _check_requant_params(multiplier, shift):
    """Per-tensor ints or per-channel arrays (the last axis of the result)."""
    multiplier, shift = np.asarray(multiplier), np.asarray(shift)
    if multiplier.size and not (0 <= multiplier.min() and multiplier.max() <= INT32_MAX):
        raise ValueError(f"multiplier must be in 0..{INT32_MAX}, got {multiplier}")
    if shift.size and not (SHIFT_MIN <= shift.min() and shift.max() <= SHIFT_MAX):
        raise ValueError(f"shift must be in {SHIFT_MIN}..{SHIFT_MAX}, got {shift}")


def _requantize(x, multiplier, shift, single_round=False):
    """MultiplyByQuantizedMultiplier on an int64 tensor holding int32 values; ``multiplier`` and
    ``shift`` are ints or per-channel arrays broadcast against the last axis (``single_round``: the
    product rounded once, as ``numerics.requantize``)."""
    torch = _torch()
    m = _to_tensor(multiplier, x.device)
    s = _to_tensor(shift, x.device)
    left, right = torch.clamp(s, min=0), torch.clamp(-s, min=0)
    one = torch.ones_like(s)
    # Saturating left shift (as a multiply: |x| * 2^30 < 2^62 fits int64).
    x = torch.clamp(x * (one << left), INT32_MIN, INT32_MAX)
    if single_round:
        return (x * m + (one << (30 + right))) >> (31 + right)
    # SaturatingRoundingDoublingHighMul: (x*M0 + nudge) / 2^31, C-style truncation toward zero.
    ab = x * m                                              # |ab| <= 2^62
    total = ab + torch.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = torch.where(total >= 0, total >> 31, -((-total) >> 31))
    high = torch.where((x == INT32_MIN) & (m == INT32_MIN), INT32_MAX, high)  # single overflow
    # RoundingDivideByPOT: round half away from zero = sign(h) * ((|h| + 2^(e-1)) >> e).
    mag = (high.abs() + ((one << right) >> 1)) >> right
    return torch.where(high < 0, -mag, mag)


def _to_tensor(x, device):
    torch = _torch()
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64)).to(device)


def requantize_reference(acc, multiplier, shift, device=None) -> np.ndarray:
    """``numerics.requantize`` in torch (int32 accumulators in, int64 array out)."""
    _check_requant_params(multiplier, shift)
    acc = np.asarray(acc)
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise ValueError("accumulators must lie in the int32 range")
    dev = reference_device(device)
    return _requantize(_to_tensor(acc, dev), multiplier, shift).cpu().numpy()


def _int_array(name, x, ndim):
    x = np.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    if x.size == 0:
        return x.astype(np.int64)
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.bool_)):
        if not np.all(np.isfinite(x)) or np.any(x != np.round(x)):
            raise ValueError(f"{name} must hold integers")
    if x.min() < INT32_MIN or x.max() > INT32_MAX:
        raise ValueError(f"{name} values must lie in the int32 range, got {x.min()}..{x.max()}")
    return x.astype(np.int64)


def _matmul_exact(a, w, bias, device):
    """int32-wrapped ``a @ w + bias`` (each addition wrapping like a 32-bit accumulator) as int64 tensor."""
    torch = _torch()
    a = _int_array("a", a, 2)
    w = _int_array("w", w, 2)
    bias = _int_array("bias", bias, 1)
    (_, k), (k2, n) = a.shape, w.shape
    if k != k2:
        raise ValueError(f"inner dimensions differ: a is {a.shape}, w is {w.shape}")
    if bias.shape != (n,):
        raise ValueError(f"bias must have shape ({n},), got {bias.shape}")
    amax = int(np.abs(a).max()) if a.size else 0
    wmax = int(np.abs(w).max()) if w.size else 0
    if k * amax * wmax >= _EXACT_LIMIT:
        raise ValueError(f"K * max|a| * max|w| = {k * amax * wmax} >= 2^53: the float64 matmul would not "
                         f"be exact")
    af = torch.from_numpy(a.astype(np.float64)).to(device)
    wf = torch.from_numpy(w.astype(np.float64)).to(device)
    acc = _wrap32((af @ wf).to(torch.int64))
    return _wrap32(acc + _to_tensor(bias, device)[None, :])


def gemm_reference(a, w, bias, multiplier, shift, out_zp: int, qmin: int, qmax: int, lut=None,
                   device=None, single_round: bool = False) -> np.ndarray:
    """``activation_unit(wrap32(a @ w), bias, ...)`` computed with torch on ``device`` -> int64 (M, N)."""
    torch = _torch()
    _check_requant_params(multiplier, shift)
    if qmin > qmax:
        raise ValueError(f"qmin {qmin} > qmax {qmax}")
    if lut is not None:
        lut = np.asarray(lut)
        if lut.shape != (256,):
            raise ValueError(f"lut must have 256 entries, got shape {lut.shape}")
        if qmin < -128 or qmax > 127:
            raise ValueError(f"LUT mode needs qmin/qmax within -128..127, got {qmin}..{qmax}")
    dev = reference_device(device)
    acc = _matmul_exact(a, w, bias, dev)
    y = _requantize(acc, multiplier, shift, single_round)
    y = torch.clamp(y + int(out_zp), int(qmin), int(qmax))
    if lut is not None:
        y = _to_tensor(lut, dev)[y + 128]
    return y.cpu().numpy()


def float_requant_reference(a, w, bias, real_scale: float, out_zp: int, qmin: int, qmax: int,
                            precision: str = "float64", device=None) -> np.ndarray:
    """Float-requant runtime: ``clamp(round_half_even((a@w + bias) * real_scale) + out_zp, qmin, qmax)``.

    ``precision="float32"`` mimics onnxruntime's float32 requantization; the default is float64.
    """
    torch = _torch()
    dtype = {"float64": torch.float64, "float32": torch.float32}.get(precision)
    if dtype is None:
        raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")
    if qmin > qmax:
        raise ValueError(f"qmin {qmin} > qmax {qmax}")
    dev = reference_device(device)
    acc = _matmul_exact(a, w, bias, dev)
    y = torch.round(acc.to(dtype) * torch.tensor(real_scale, dtype=dtype, device=dev))  # half to even
    y = torch.clamp(y.to(torch.float64) + out_zp, qmin, qmax)
    return y.to(torch.int64).cpu().numpy()


def time_gemm(*args, repeat: int = 10, warmup: int = 2, device=None, **kwargs) -> float:
    """Seconds per ``gemm_reference(*args, **kwargs)`` call (host transfers included).

    Uses CUDA events on a CUDA device, ``time.perf_counter`` otherwise.
    """
    dev = reference_device(device)
    for _ in range(warmup):
        gemm_reference(*args, device=dev, **kwargs)
    if dev.startswith("cuda"):
        torch = _torch()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeat):
            gemm_reference(*args, device=dev, **kwargs)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000.0 / repeat
    t0 = time.perf_counter()
    for _ in range(repeat):
        gemm_reference(*args, device=dev, **kwargs)
    return (time.perf_counter() - t0) / repeat


def time_int8_matmul(m: int, k: int, n: int, device=None, *, min_seconds: float = 0.5) -> dict | None:
    """The GPU's own INT8 GEMM on an ``m x k @ k x n`` problem: ``torch._int_mm`` (int8 x int8 -> int32,
    tensor cores through cuBLASLt) on random operands already on the device, no requantization, no
    host transfers. Dimensions are padded to what the kernel accepts (m > 16, k and n multiples of 8).
    Returns ``{"int8_kernel_us", "padded_shape"}`` (CUDA events, mean over >= ``min_seconds`` of calls),
    or None on a CPU (the CPU path has no comparable tuned kernel here)."""
    dev = reference_device(device)
    if not dev.startswith("cuda"):
        return None
    torch = _torch()
    mp, kp, np_ = max(m, 17), -(-k // 8) * 8, -(-n // 8) * 8
    a = torch.randint(-128, 128, (mp, kp), dtype=torch.int8, device=dev)
    w = torch.randint(-128, 128, (kp, np_), dtype=torch.int8, device=dev)
    for _ in range(3):
        torch._int_mm(a, w)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    calls, t0 = 0, time.perf_counter()
    start.record()
    while calls < 100 or time.perf_counter() - t0 < min_seconds:
        torch._int_mm(a, w)
        calls += 1
    end.record()
    torch.cuda.synchronize()
    return {"int8_kernel_us": start.elapsed_time(end) * 1000.0 / calls, "padded_shape": [mp, kp, np_]}

