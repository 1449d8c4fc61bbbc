"""TFLite's int8 ADD on the NPU: elementwise ACTIVATEs (``golden/isa.py``, ACTIVATE ``ew``).

TFLite rescales each input to a common grid (``(q - zp) << left_shift``, then that input's multiplier
and shift), adds, and requantizes the sum. The first step is a function of one int8 value, so the
compiler tabulates it: table X holds input 1's rescaled value for each of the 256 codes, table Y input
2's (``add_tables``). An elementwise ACTIVATE presents ``X[x]`` and ``Y[y]`` to the activation unit as
accumulator and bias, whose requantization, zero point and clamp are the rest of TFLite's ADD, with
the same double rounding. So the result is exact for any scales, by construction.

``add_program``: the two inputs stream in through the activation SRAM in chunks of ``CHUNK_WORDS``
words (two regions per input, so that the next chunk loads while the ACT unit works on this one), each
chunk one elementwise ACTIVATE that pushes its results to data-out. A word holds ``min(rows, cols)``
values; each row takes two data-in beats and, overlapped with them, two ACT cycles (two SRAM reads), so
an ADD of ``n`` values costs about ``2 * n / lanes`` cycles plus the tables' load (2 KiB).
"""
from __future__ import annotations

import numpy as np

from opennpu.config import NpuConfig
from opennpu.golden import numerics
from opennpu.golden.deps import order_program
from opennpu.golden.isa import Command, ErrorCode, LutTable, Opcode
from opennpu.golden.program import Program

from .graph import AddAttrs

__all__ = ["add_tables", "add_program", "run_add"]

_CODES = np.arange(-128, 128)
#: Words per chunk: short, so that the last chunk's ACTIVATE, which nothing overlaps, is short too.
CHUNK_WORDS = 64


def add_tables(attrs: AddAttrs) -> np.ndarray:
    """(2, 256) int64: per input, each int8 code's rescaled value (``[q + 128]``), TFLite's first step."""
    return np.stack([numerics.requantize((_CODES - zp) << attrs.left_shift, m, s)
                     for zp, m, s in zip(attrs.in_zp, attrs.in_multiplier, attrs.in_shift)])


def _lanes(config: NpuConfig) -> int:
    return min(config.rows, config.cols)


def _words(values: np.ndarray, config: NpuConfig) -> np.ndarray:
    """Flat int8 values -> data-in words (one row per SRAM word, padded to whole beats), uint8."""
    lanes = _lanes(config)
    count = -(-values.size // lanes)
    words = np.zeros((count, config.beats(config.act_word_bytes) * config.bus_bytes), np.uint8)
    flat = np.zeros(count * lanes, np.int8)
    flat[:values.size] = values.reshape(-1)
    words[:, :lanes] = flat.reshape(count, lanes).view(np.uint8)
    return words


def add_program(attrs: AddAttrs, x, y, config: NpuConfig) -> Program:
    """The program that adds int8 arrays ``x`` and ``y`` (same size, any shape) as TFLite's ADD with
    ``attrs`` does; its data-out is one beat per word of results (``run_add`` decodes it). Raises
    ``ValueError`` for arrays of different sizes, or values outside int8."""
    x, y = np.asarray(x), np.asarray(y)
    if x.size != y.size or not x.size:
        raise ValueError(f"ADD on the NPU needs two non-empty inputs of one size, got {x.shape} and {y.shape}")
    if min(x.min(), y.min()) < -128 or max(x.max(), y.max()) > 127:
        raise ValueError("ADD inputs must be int8 values")
    tables = add_tables(attrs)
    wx, wy = _words(x, config), _words(y, config)
    region = min(config.act_depth // 4, CHUNK_WORDS)
    if not region:
        raise ValueError(f"ADD on the NPU needs act_depth >= 4 (four regions), got {config.act_depth}")
    lut = Command(Opcode.LOAD_LUT, table=LutTable.EW)
    commands = [lut, Command(Opcode.CONFIG, multiplier=attrs.out_multiplier, shift=attrs.out_shift,
                             out_zp=attrs.out_zp, qmin=attrs.qmin, qmax=attrs.qmax)]
    table_bytes = config.beats(LutTable.EW.nbytes) * config.bus_bytes
    data = [tables.astype("<i4").tobytes().ljust(table_bytes, b"\0")]
    for k, start in enumerate(range(0, len(wx), region)):
        rows = min(region, len(wx) - start)
        base = (k % 2) * 2 * region
        commands += [Command(Opcode.LOAD, buf=0, addr=base, rows=rows),
                     Command(Opcode.LOAD, buf=0, addr=base + region, rows=rows),
                     Command(Opcode.ACTIVATE, ew=1, xaddr=base, yaddr=base + region, rows=rows, dest=1)]
        data += [wx[start:start + rows].tobytes(), wy[start:start + rows].tobytes()]
    return order_program(Program(commands, b"".join(data)), config)


def run_add(attrs: AddAttrs, x, y, config: NpuConfig, backend="golden") -> tuple:
    """TFLite's ADD of int8 arrays ``x`` and ``y`` (same shape) on the NPU (``backend``: a driver name or an
    object with ``run(program)``); returns ``(result of x's shape as int64, counters)``. Raises
    ``RuntimeError`` if the NPU rejects a command."""
    x = np.asarray(x)
    if isinstance(backend, str):
        from opennpu.sim.driver import Npu
        backend = Npu(config, backend)
    result = backend.run(add_program(attrs, x, y, config))
    if result.error != ErrorCode.OK:
        raise RuntimeError(f"the NPU rejected {result.rejected} command(s) of an ADD: {ErrorCode(result.error).name}")
    beats = np.frombuffer(result.outputs, np.int8).reshape(-1, config.bus_bytes)
    out = beats[:, :_lanes(config)].reshape(-1)[:x.size]
    return out.astype(np.int64).reshape(x.shape), dict(result.counters)
