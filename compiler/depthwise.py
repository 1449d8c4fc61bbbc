"""Depthwise convolutions on the depthwise COMPUTE (``golden/isa.py``, ``dw``): an ``R``-tap FIR per channel.

Channel n of a group sits in column n of the array, and PE(k, n) multiplies lane n of the word k
positions back in the stream, so a stream of the image row after row, ``P`` positions a row (its ``W``
data columns, then padding), takes tap (i, j) of the kernel at k = (last kernel row - i) * P + kw - 1 - j:
one pass covers as many kernel rows as fit in ``R`` taps (all three of a 3x3 kernel on a 16-row array
while W + 1 <= 6), and passes of the other kernel rows accumulate. A stride-2 layer streams the same
image and writes every other output of every other row (CONFIG ``dw_stride2``). The image stays where the producer's
``ACTIVATE`` left it (channel group after group, sample after sample, ``W`` words a row): the COMPUTE
reads its data positions in order and fills the padding with the input zero point (CONFIG ``dw_pad``).
So a 3x3 layer of a 25x5 image runs in 164 stream cycles per channel group and sample (125 outputs,
9 of 16 taps used) instead of 9 K tiles of 125 rows that each use one PE of a column.

Functions take a ``QLayer`` whose ``w`` is the dense (C * kh * kw) x C block-diagonal matrix.
"""
from __future__ import annotations

import numpy as np

from opennpu.config import NpuConfig
from opennpu.golden.checks import dw_stream_words

from .qlayers import QLayer

__all__ = ["fir_passes", "fir_period", "fir_span", "fir_tile", "fir_runs", "fir_slack", "fir_dw_config"]

#: CONFIG / COMPUTE field limits: dw_width, dw_period and dw_height are 8 bits, drow signed 8 bits.
_MAX_DIM, _MAX_ROW = 255, 127


def _depthwise(layer: QLayer) -> bool:
    """A convolution whose output channel c reads input channel c alone (depth multiplier 1)."""
    conv = layer.conv
    if conv is None or conv.in_shape[0] != layer.n:
        return False
    c = layer.n
    taps = conv.kernel[0] * conv.kernel[1]
    mask = np.ones((c, taps, c), bool)
    mask[np.arange(c), :, np.arange(c)] = False
    return not layer.w.reshape(c, taps, c)[mask].any()


def fir_period(layer: QLayer) -> int:
    """Stream positions per image row: the data columns, then at least the padding of either side (the
    right padding of one row is the left padding of the next), and no fewer than the kernel is wide (the
    taps of two kernel rows must not meet)."""
    conv = layer.conv
    return max(conv.in_shape[2] + max(conv.pads[1], conv.pads[3]), conv.kernel[1])


def fir_span(layer: QLayer, rows: tuple) -> int:
    """FIR taps (PE rows) that kernel rows ``rows`` = (i0, i1) take."""
    return (rows[1] - rows[0] - 1) * fir_period(layer) + layer.conv.kernel[1]


def _stride(layer: QLayer) -> int:
    return layer.conv.stride[0]


def fir_passes(layer: QLayer, config: NpuConfig) -> list | None:
    """The kernel-row ranges ``[(i0, i1)]`` of the passes of a depthwise convolution on the depthwise
    COMPUTE, or None if it does not take it: a depthwise layer (int8 weights) of dilation 1 whose output
    is as large as its input (stride 1), or every other position of that (stride 2: ``dw_stride2`` writes
    only those), a kernel row within the array's ``rows`` taps, a channel group a column each
    (``rows <= cols``), an image within the fields' limits, and fewer stream cycles than the
    block-diagonal K tiles take."""
    conv = layer.conv
    if conv is None or not _depthwise(layer) or config.rows > config.cols:
        return None
    _, h, w = conv.in_shape
    kh, kw = conv.kernel
    period = fir_period(layer)
    s = conv.stride[0]
    if conv.stride not in ((1, 1), (2, 2)) or conv.dilation != (1, 1) or conv.out_hw != (-(-h // s), -(-w // s)) \
            or kw > config.rows or period > _MAX_DIM or h > _MAX_ROW:
        return None
    per_pass = min(kh, (config.rows - kw) // period + 1)
    passes = [(i0, min(i0 + per_pass, kh)) for i0 in range(0, kh, per_pass)]
    # (stream cycles a sample and channel group, against a K tile of its output rows per tap: a 1x1 or 1x2
    # kernel gains nothing)
    return passes if len(passes) * (h * period + config.rows - 1) < kh * kw * conv.positions else None


def fir_tile(layer: QLayer, config: NpuConfig, c0: int, width: int, rows: tuple) -> np.ndarray:
    """Weight SRAM words (uint8) of kernel rows ``rows`` for channels ``c0 .. c0+width``: word k = tap k."""
    kh, kw = layer.conv.kernel
    period = fir_period(layer)
    tile = np.zeros((fir_span(layer, rows), config.cols), np.int64)
    ch = np.arange(c0, c0 + width)
    for i in range(*rows):
        for j in range(kw):
            tile[(rows[1] - 1 - i) * period + kw - 1 - j, :width] = layer.w[ch * kh * kw + i * kw + j, ch]
    return tile.astype(np.int8).view(np.uint8)


def fir_runs(layer: QLayer, config: NpuConfig, rows: tuple, base: int, y0: int, y1: int) -> dict:
    """The COMPUTE fields (but ``accaddr`` and ``accumulate``) of kernel rows ``rows`` over output rows
    ``y0 .. y1`` of one sample whose channel group lies at ``base``: its outputs are those rows' positions
    in order, ``(y1 - y0) * Wo`` accumulator rows (the stride-1 outputs of rows ``s * y0 .. s * (y1 - 1)``,
    of which stride s = 2 writes every other one)."""
    conv = layer.conv
    _, h, w = conv.in_shape
    kw, (pt, pl), s = conv.kernel[1], conv.pads[:2], _stride(layer)
    period = fir_period(layer)
    last_tap = (s * y0 + rows[1] - 1 - pt) * period + kw - 1 - pl   # output (y0, 0)'s last tap
    drow, dcol = divmod(last_tap - (config.rows - 1), period)
    first = 0 if drow < 0 else min(h * w, drow * w + min(dcol, w))  # the first data position it reads
    return dict(aaddr=base + first, rows=(s * (y1 - y0 - 1) + 1) * period - (period - w), dw=1, drow=drow, dcol=dcol)


def fir_slack(layer: QLayer, config: NpuConfig) -> int:
    """Words past its input tensor's end that a pass over one sample's rows may name (the COMPUTE's range
    rule counts all its stream words from ``aaddr``, padding positions too): what a stage keeps free at
    the top of the activation SRAM."""
    _, h, w = layer.conv.in_shape
    ends = []
    for rows in fir_passes(layer, config):
        run = fir_runs(layer, config, rows, 0, 0, layer.conv.out_hw[0])
        ends.append(run["aaddr"] + dw_stream_words(config, run["rows"]))
    return max(ends) - h * w


def fir_dw_config(layer: QLayer) -> dict:
    """The CONFIG fields of the layer's image: width, period, height, the padding value (its input zero
    point) and whether it writes every other output (stride 2)."""
    _, h, w = layer.conv.in_shape
    return dict(dw_width=w, dw_period=fir_period(layer), dw_height=h, dw_pad=int(layer.in_q[1]),
                dw_stride2=int(_stride(layer) == 2))
