"""Tiled program for one quantized GEMM ``Y = act(requant(A @ W + bias))`` on a given ``NpuConfig``.

Tiling (weight-stationary): K is cut into tiles of ``k_tile`` rows (the array's rows; twice that in
a4w4), N into tiles of ``cols`` columns, M into chunks of ``Mc`` rows sized so that one chunk of A
(all its K tiles) fits half the activation SRAM and two N tiles of accumulators fit the accumulator
SRAM. Loop order: chunk -> N tile -> K tile (accumulating across K tiles). A chunks alternate between
the two halves of the activation SRAM, output tiles cycle through three regions of the accumulator
SRAM (two when only two fit); weights stay resident when they all fit, otherwise they cycle through a
ring of slots. Where one tile's loads would outlast its COMPUTEs (the chunk's activations arrive with its
first N tile), the first two N tiles of a chunk interleave their K steps (a *lead group*,
``lead_group``): each activation tile then serves two COMPUTEs, and it loads in two halves during the two
COMPUTEs before the one that needs it.

Small M (M <= cols < N: matrix-vector, batch-1 layers): ``build_gemm`` also ranks the transposed
product ``Y^T = W^T A^T`` (``transposed_spec``), where A^T is the stationary tile and W^T streams through
the array at the bus's rate, and keeps whichever the estimate (or, for small GEMMs, the cycle model)
finds faster; ``GemmProgram.decode_output`` transposes its result back.

The tiles become ``schedule.Step``s and ``schedule.emit_steps`` (the emitter the model compiler uses too)
software-pipelines them for the in-order dispatcher: the loads of step s+1 follow the COMPUTE of step s
(weights first, so PRELOAD s+1 overlaps the activation load), the ACTIVATE of a finished N tile follows
the first COMPUTE of the next tile, so the array never waits for write-back, and the first COMPUTEs and
the last write-back stream behind the loads and the drain they read (``stream``, ``golden.isa.Wait.STREAM``).

Output-stationary (``config.dataflow == "os"``, ``_schedule_os``): the output is cut into ``rows`` x
``cols`` tiles; one COMPUTE streams all of K (or a K chunk, accumulating, when two weight chunks must
share the weight SRAM) through the array for one tile. Activation tiles are stored transposed (one
SRAM word per K step: the step's value of each of the tile's rows) and alternate between the SRAM
halves; the next M tile's activations load while the current one computes. Weights stay resident
when they fit, otherwise each tile's chunk is loaded into one of two alternating slots.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from opennpu.config import NpuConfig
from opennpu.golden import numerics
from opennpu.golden.isa import Buf, Opcode, Precision
from opennpu.golden.model import k_tile, stream_weight_words, weight_words
from opennpu.golden.program import Program
from opennpu.golden.timing import ACT_LATENCY, array_latency

from .schedule import (Activate, Emitter, Load, Step, config_requant, emit_steps, per_channel, requant_params,
                       row_pieces, tile_quant)

__all__ = ["GemmSpec", "GemmProgram", "build_gemm", "transposed_spec", "bias_digits", "random_gemm", "gemm_bound", "ACTIVATIONS", "ORDERS"]

ACTIVATIONS = ("none", "relu", "relu6", "gelu", "silu", "sigmoid", "tanh")


@dataclass
class GemmSpec:
    """Integer operands and requantization parameters of one layer (values, not scales)."""
    a: np.ndarray              # M x K, int8 (or int4 values in a4w4)
    w: np.ndarray              # K x N, int8 (or int4 values in a8w4 / a4w4)
    bias: np.ndarray           # N, int32 (activation zero point already folded in)
    multiplier: int | np.ndarray   # per tensor, or N values (per output channel)
    shift: int | np.ndarray
    out_zp: int = 0
    qmin: int = -128
    qmax: int = 127
    lut: np.ndarray | None = None
    precision: Precision = Precision.INT8
    single_round: bool = False     # TFLite's single-rounding requantization (CONFIG single_round)
    raw: bool = False              # int32 sums A @ W + bias out (STORE of the accumulators; bias added on the host)

    def __post_init__(self):
        self.a = np.asarray(self.a, np.int64)
        self.w = np.asarray(self.w, np.int64)
        self.bias = np.asarray(self.bias, np.int64)
        p = self.precision
        self.precision = Precision.from_label(p) if isinstance(p, str) else Precision(p)
        if self.a.ndim != 2 or self.w.ndim != 2 or self.a.shape[1] != self.w.shape[0] or 0 in self.a.shape \
                or 0 in self.w.shape:
            raise ValueError(f"GEMM needs A (M x K) and W (K x N) with matching non-zero K, got "
                             f"A {self.a.shape} and W {self.w.shape}")
        if self.bias.shape != (self.w.shape[1],):
            raise ValueError(f"bias must have shape ({self.w.shape[1]},), got {self.bias.shape}")
        self.multiplier, self.shift = requant_params(self.multiplier, self.shift, len(self.bias))
        a_bits = 4 if self.precision == Precision.A4W4 else 8
        w_bits = 8 if self.precision == Precision.INT8 else 4
        for name, m, bits in (("A", self.a, a_bits), ("W", self.w, w_bits)):
            lo, hi = numerics.int_range(bits)
            if m.min() < lo or m.max() > hi:
                raise ValueError(f"{name} values must fit int{bits} for {self.precision.label}, "
                                 f"got range {m.min()}..{m.max()}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.a.shape[0], self.a.shape[1], self.w.shape[1]

    def expected(self) -> np.ndarray:
        """Direct numpy result (no tiling): the golden numerics applied to the whole product."""
        acc = numerics.wrap_int32(numerics.int_matmul(self.a, self.w))
        if self.raw:
            return numerics.wrap_int32(acc + self.bias)
        return numerics.activation_unit(acc, self.bias, self.multiplier, self.shift, self.out_zp,
                                        self.qmin, self.qmax, self.lut, self.single_round)


@dataclass
class GemmProgram:
    program: Program
    spec: GemmSpec
    config: NpuConfig
    chunks: list          # [(m0, rows)] of the computed product's rows
    n_tiles: int
    #: The operands the program multiplies when it is not ``spec`` itself: ``transposed_spec(spec)``, whose
    #: product is Y^T (N x M); ``decode_output`` transposes it back.
    computed: GemmSpec | None = None

    @property
    def transposed(self) -> bool:
        return self.computed is not None

    def decode_output(self, data_out: bytes) -> np.ndarray:
        """Data-out bytes of the program -> M x N int64 result."""
        c = self.config
        m, _, n = (self.computed or self.spec).shape
        row_bytes = c.beats(4 * c.cols if self.spec.raw else c.cols) * c.bus_bytes
        expected = sum(rows for _, rows in self.chunks) * self.n_tiles * row_bytes
        if len(data_out) != expected:
            raise ValueError(f"data-out has {len(data_out)} bytes, the program emits {expected}")
        out = np.zeros((m, n), np.int64)
        if self.spec.raw:             # int32 accumulator rows; the bias is added here
            raw = np.frombuffer(data_out, "<i4").reshape(-1, row_bytes // 4)[:, :c.cols].astype(np.int64)
        else:
            raw = np.frombuffer(data_out, np.int8).reshape(-1, row_bytes)[:, :c.cols].astype(np.int64)
        pos = 0
        for m0, rows in self.chunks:
            for t in range(self.n_tiles):
                width = min(c.cols, n - t * c.cols)
                out[m0:m0 + rows, t * c.cols:t * c.cols + width] = raw[pos:pos + rows, :width]
                pos += rows
        if self.transposed:
            out = np.ascontiguousarray(out.T)
        return numerics.wrap_int32(out + self.spec.bias) if self.spec.raw else out


def _pad(block: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.zeros((rows, cols), np.int64)
    out[:block.shape[0], :block.shape[1]] = block
    return out


def _act_words(spec: GemmSpec, config: NpuConfig, rows: np.ndarray) -> np.ndarray:
    """A rows of one K tile (M' x k_tile values) -> activation SRAM words (M' x config.rows bytes)."""
    if spec.precision == Precision.A4W4:
        return numerics.pack_int4(rows)
    return rows.astype(np.int8).view(np.uint8)


def _wgt_words(spec: GemmSpec, config: NpuConfig, tile: np.ndarray) -> np.ndarray:
    """One weight tile (k_tile x cols values) -> weight SRAM words (int4: two K rows per word)."""
    if spec.precision == Precision.INT8:
        return tile.astype(np.int8).view(np.uint8)
    packed = numerics.pack_int4(tile)                      # k_tile x cols/2
    return packed.reshape(-1, config.cols)                 # rows 2i, 2i+1 side by side


def gemm_bound(config: NpuConfig, m: int, k: int, n: int, precision: str | Precision = "int8") -> dict:
    """Lower bound on the cycles of an ``m x k x n`` GEMM on a weight-stationary ``config`` (issue 19):

        bound = max(compute, data_in, data_out) + latency
        compute  = M*K*N / (rows * cols * MACs per PE per cycle)      (2 MACs per PE in a4w4, else 1)
        data_in  = (A bytes + W bytes + 4*N bias bytes) / bus_bytes    (int4 operands: half a byte a value)
        data_out = M*N / bus_bytes                                     (one byte per output value)
        latency  = fill + drain + activation of one tile
                 = (rows + 2)               PRELOAD of the first weight tile, before any row can enter
                 + (array_latency + 2)      the last row's trip through the array and its drain
                 + (ACT_LATENCY + 3)        the activation pipeline and the output register

    Returns every term, the latency's three parts (``fill``, ``drain``, ``activation``) and ``bound``;
    ``limit`` names the largest of the three throughput terms."""
    p = Precision.from_label(precision) if isinstance(precision, str) else Precision(precision)
    a_bits, w_bits = (4 if p == Precision.A4W4 else 8), (8 if p == Precision.INT8 else 4)
    terms = {"compute": m * k * n / (config.rows * config.cols * (k_tile(config, p) // config.rows)),
             "data_in": (m * k * a_bits / 8 + k * n * w_bits / 8 + 4 * n) / config.bus_bytes,
             "data_out": m * n / config.bus_bytes}
    parts = {"fill": config.rows + 2, "drain": array_latency(config.rows, config.cols) + 2,
             "activation": ACT_LATENCY + 3}
    latency = sum(parts.values())
    limit = max(terms, key=terms.get)
    return {**terms, **parts, "latency": latency, "limit": limit, "bound": terms[limit] + latency}


ORDERS = ("n_outer", "k_outer", "n_stream")

#: ``build_gemm`` simulates the candidate orders (and keeps the fastest) only while they total at most this
#: many steps; larger GEMMs take the order ``_estimate`` ranks first (its error, measured on the shapes of
#: ``benchmarks/bench_golden.py``, is far below the gap between the orders there).
SIMULATE_STEPS = 4096
#: ... and only the orders whose estimate is within this factor of the best one.
SIMULATE_WITHIN = 1.15
#: A larger GEMM takes the order ``_estimate`` ranks first, unless that one has more than
#: ``COMPACT_STEPS`` steps: then the one with the fewest steps among those within ``COMPACT_WITHIN`` of the
#: best estimate. Compile and golden time grow with the commands, and where K shrinks the chunks the
#: steps grow like M·K²·N (1024^3 on 16x16: ``n_outer``'s 131,072 steps run 2.7 % fewer cycles than
#: ``n_stream``'s 8,192 but take 12 s of compile and golden time instead of 1 s).
COMPACT_STEPS = 32768
COMPACT_WITHIN = 1.05
#: The shortest M chunk (rows of W^T) tried for the transposed product.
MIN_TRANSPOSED_CHUNK = 32
#: The transposed product's bias digits: at most this many entries of 127 * 127 each, and one remainder.
MAX_BIAS_DIGITS = 64


def _chunk(config: NpuConfig, spec: GemmSpec, order: str, max_chunk: int | None = None) -> int:
    """Rows of one M chunk in ``order``, at most ``max_chunk`` (< 1: the order cannot hold one row)."""
    m, k, n = spec.shape
    m = min(m, max_chunk or m)
    n_k, n_n = -(-k // k_tile(config, spec.precision)), -(-n // config.cols)
    if order == "n_stream":        # two accumulator tiles; activation tiles stream through >= 2 slots
        return min(m, config.acc_depth // 2, config.act_depth // 2)
    live_tiles = 2 if order == "n_outer" else 2 * n_n       # accumulator tiles resident at once
    return min(m, config.acc_depth // live_tiles, (config.act_depth // 2) // n_k)


def _estimate(config: NpuConfig, spec: GemmSpec, order: str, max_chunk: int | None = None) -> float:
    """Approximate cycles of ``order``: per step, the longest of the array (``rows`` cycles), the
    PRELOAD (a PE row a cycle) and the load unit (the step's weight tile unless weights are resident,
    its activation tile in ``n_stream``, otherwise the chunk's activations spread over its steps)."""
    m, k, n = spec.shape
    kt = k_tile(config, spec.precision)
    n_k, n_n = -(-k // kt), -(-n // config.cols)
    chunk = _chunk(config, spec, order, max_chunk)
    tile_words = weight_words(spec.precision, kt)
    resident = n_k * n_n * tile_words <= config.wgt_depth
    act_beats, wgt_beats = config.beats(config.act_word_bytes), config.beats(config.wgt_word_bytes)
    total = 0.0
    for m0 in range(0, m, chunk):
        rows = min(chunk, m - m0)
        weights = 0 if resident and m0 else (tile_words * wgt_beats + 1)
        acts = rows * act_beats + 1 if order == "n_stream" else (rows * act_beats + 1) / n_n
        total += n_n * n_k * max(rows, config.rows, weights + acts)
    return total


def bias_digits(residual: np.ndarray, coefficient: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Integers ``r`` (N values) as a product of int8 values: ``(d, c)`` with ``d @ c == r`` exactly, ``d``
    an N x J matrix of digits in -127..127, ``c`` J coefficients: ``coefficient`` for all but the last,
    which is 1 and carries ``r`` modulo ``coefficient`` (centered, so within -63..63). J grows with the
    largest ``|r|`` (one entry per 127 * 127 = 16,129); J = 0 when every ``r`` is zero."""
    r = np.asarray(residual, np.int64)
    q = np.floor_divide(r + coefficient // 2, coefficient)           # r = coefficient * q + s, |s| <= 63
    rest = r - coefficient * q
    digits = []
    while np.any(q):
        digits.append(np.clip(q, -127, 127))
        q = q - digits[-1]
    coefficients = [coefficient] * len(digits)
    if np.any(rest):
        digits.append(rest)
        coefficients.append(1)
    return (np.stack(digits, axis=1) if digits else np.zeros((len(r), 0), np.int64)), np.array(coefficients, np.int64)


def transposed_spec(spec: GemmSpec) -> GemmSpec:
    """``Y^T = W^T A^T`` as a GEMM of its own (N x K' x M); ``ValueError`` where it cannot be one.

    For a small M (matrix-vector, batch-1 layers) on the weight-stationary array: A^T becomes the
    stationary weight tile and W^T streams through the array as activation rows, one SRAM word (a K tile
    of one output column) per cycle, so the weights cross the bus once at the bus's full rate instead of
    each weight tile waiting for the PE buffer that the drain of the step before holds. The activation
    unit's bias and requantization are per column, i.e. per row of A here: so only per-tensor
    requantization transposes, and the bias goes into the product. Its common part (the middle of its
    range) stays the ACTIVATE bias of every column; the rest rides in ``bias_digits``' extra K entries
    (digits appended to W^T's rows, their coefficients to A^T's), exact in the int32 accumulators. int8
    only (a8w4 would need int4 activations), and biases within ``MAX_BIAS_DIGITS * 127 * 127`` of the
    middle of their range (at most ``MAX_BIAS_DIGITS + 1`` digit entries). int32 outputs (``raw``) need
    no digits: the host adds the bias."""
    if spec.precision != Precision.INT8 or per_channel(spec.multiplier):
        raise ValueError("the transposed product needs int8 operands and per-tensor requantization")
    m = spec.shape[0]
    if spec.raw:
        return replace(spec, a=spec.w.T, w=spec.a.T, bias=np.zeros(m, np.int64))
    base = (int(spec.bias.max()) + int(spec.bias.min())) // 2
    spread = int(spec.bias.max()) - base
    if spread > MAX_BIAS_DIGITS * 127 * 127:
        raise ValueError(f"the transposed product takes biases within +-{MAX_BIAS_DIGITS * 127 * 127} of the "
                         f"middle of their range ({MAX_BIAS_DIGITS + 1} int8 digit entries), not +-{spread}")
    digits, coefficients = bias_digits(spec.bias - base)
    return replace(spec, a=np.concatenate([spec.w.T, digits], axis=1),
                   w=np.concatenate([spec.a.T, np.repeat(coefficients[:, None], m, axis=1)], axis=0),
                   bias=np.full(m, base, np.int64))


def _orders(config: NpuConfig, spec: GemmSpec) -> list:
    """The loop orders worth ranking for ``spec``: those that hold a row, n_stream only where its chunks are
    taller than n_outer's (else it only loads more); none when n_outer cannot hold one row."""
    names = [name for name in ORDERS if _chunk(config, spec, name) >= 1]
    if _chunk(config, spec, "n_stream") <= _chunk(config, spec, "n_outer"):
        names = [name for name in names if name != "n_stream"]
    return names if names and names[0] == "n_outer" else []


def build_gemm(config: NpuConfig, spec: GemmSpec, order: str | None = None,
               transpose: bool | None = None) -> GemmProgram:
    """Tile ``spec`` for ``config``; raises ``ValueError`` if it cannot be scheduled.

    ``order`` picks the loop nest inside an M chunk: ``"n_outer"`` (N tile, then K tiles; two
    accumulator tiles live; every activation tile of the chunk loaded once), ``"k_outer"`` (K tile, then
    N tiles; every N tile of the chunk live) or ``"n_stream"`` (as ``n_outer``, but each step loads its
    activation tile again, so M chunks stay as tall as the accumulators allow however long K is: for
    large K this trades data-in bytes for far fewer, longer COMPUTEs). ``transpose`` computes ``Y^T``
    instead (``transposed_spec``; ``decode_output`` transposes back). ``None`` (both) ranks the orders
    that fit with ``_estimate``, for a GEMM with M <= ``cols`` and M < N also those of the transposed
    product; small GEMMs (``SIMULATE_STEPS``) run the close candidates on the cycle model and keep the
    fastest, larger ones take the best estimate.
    """
    if spec.precision.label not in config.precisions:
        raise ValueError(f"precision {spec.precision.label!r} is not supported by this NPU "
                         f"(precisions={config.precisions})")
    if spec.lut is not None and len(spec.lut) != 256:
        raise ValueError(f"LUT must have 256 entries, got {len(spec.lut)}")
    if config.dataflow == "os" and spec.raw:
        raise ValueError("int32 outputs (raw) are scheduled for the weight-stationary dataflow only")
    if config.dataflow == "os":
        if order is not None or transpose:
            raise ValueError("loop orders and the transposed product apply to the weight-stationary dataflow only")
        return _schedule_os(config, spec)
    m, _, n = spec.shape
    if transpose is None and (order is not None or not (m <= config.cols and m < n)):
        transpose = False                          # (None: rank both; only small M is worth transposing)
    t_spec = None
    if transpose is not False:
        try:
            t_spec = transposed_spec(spec)
        except ValueError:
            if transpose:
                raise

    def build(s: GemmSpec, name: str, max_chunk: int | None = None) -> GemmProgram:
        gp = _schedule(config, s, name, max_chunk)
        return gp if s is spec else replace(gp, spec=spec, computed=s)

    if order is not None:
        if order not in ORDERS:
            raise ValueError(f"unknown loop order {order!r}; expected one of {ORDERS}")
        return build(t_spec if transpose else spec, order)
    candidates = [] if transpose else [(spec, name, None) for name in _orders(config, spec)]
    if t_spec is not None:
        names = _orders(config, t_spec)
        candidates += [(t_spec, name, None) for name in names]
        if names:
            # The transposed product of a short K is a few long steps whose first load and last COMPUTE
            # do not overlap anything: shorter chunks shrink both (A^T, M columns wide, usually stays
            # resident, so the extra chunks reload no weights; the estimate counts it where it does not).
            chunk = _chunk(config, t_spec, "n_outer")
            pieces = -(-n // chunk)
            candidates += [(t_spec, "n_outer", -(-n // (pieces * split))) for split in (2, 4, 8)
                           if n // (pieces * split) >= MIN_TRANSPOSED_CHUNK]
    if not candidates:
        return build(t_spec if transpose else spec, "n_outer")       # (raises: not even one row fits)
    estimates = [_estimate(config, *c) for c in candidates]
    best = min(estimates)
    close = [i for i, est in enumerate(estimates) if est <= SIMULATE_WITHIN * best]
    if len(close) == 1:
        return build(*candidates[close[0]])
    steps = {i: _steps(config, *candidates[i]) for i in close}
    if sum(steps.values()) > SIMULATE_STEPS:
        first = min(close, key=lambda i: estimates[i])
        if steps[first] > COMPACT_STEPS:
            first = min((i for i in close if estimates[i] <= COMPACT_WITHIN * best),
                        key=lambda i: (steps[i], estimates[i]))
        return build(*candidates[first])
    from opennpu.golden.model import GoldenNpu
    return min((build(*candidates[i]) for i in close),
               key=lambda gp: GoldenNpu(config).run(gp.program).counters["cycles"])


def _steps(config: NpuConfig, spec: GemmSpec, order: str, max_chunk: int | None) -> int:
    """The steps (one PRELOAD and COMPUTE each) of ``spec`` in ``order``."""
    m, k, n = spec.shape
    return (-(-m // _chunk(config, spec, order, max_chunk)) * -(-k // k_tile(config, spec.precision))
            * -(-n // config.cols))


def _schedule(config: NpuConfig, spec: GemmSpec, order: str, max_chunk: int | None = None) -> GemmProgram:
    """The program of ``spec`` in loop order ``order``, M chunks of at most ``max_chunk`` rows."""
    m, k, n = spec.shape
    kt, nt = k_tile(config, spec.precision), config.cols
    n_k, n_n = -(-k // kt), -(-n // nt)
    chunk = _chunk(config, spec, order, max_chunk)
    if chunk < 1:
        live_tiles = 2 if order != "k_outer" else 2 * n_n
        raise ValueError(f"K={k} needs {n_k} activation words per row and N={n} {live_tiles} "
                         f"accumulator tiles; the activation SRAM ({config.act_depth} words) or the "
                         f"accumulator SRAM ({config.acc_depth} words) cannot hold one row")
    tile_words = weight_words(spec.precision, kt)
    resident = n_k * n_n * tile_words <= config.wgt_depth
    slots = config.wgt_depth // tile_words
    stream = order == "n_stream"
    act_slots = config.act_depth // chunk             # n_stream: activation tiles cycle through them

    e = Emitter(config)

    multiplier, shift = config_requant(spec.multiplier, spec.shift)

    def preamble(_group):
        e.configure(multiplier=multiplier, shift=shift, out_zp=spec.out_zp, qmin=spec.qmin,
                    qmax=spec.qmax, lut=spec.lut, precision=spec.precision, single_round=spec.single_round)

    regions = config.acc_depth // chunk          # accumulator tiles that fit side by side
    act_beats, wgt_beats = config.beats(config.act_word_bytes), config.beats(config.wgt_word_bytes)

    def acc_addr(ci, t):
        """n_outer: consecutive output tiles cycle through ``min(3, regions)`` regions (three let a
        group of two tiles finish while the next tile starts); k_outer: one region per chunk parity."""
        if order != "k_outer":
            return ((ci * n_n + t) % min(3, regions)) * chunk
        return ((ci % 2) * n_n + t) * chunk

    def lead_group(rows, weights_load):
        """How many leading N tiles of a chunk interleave their K steps (n_outer): the first tile alone
        would need every activation tile of the chunk within its own ``n_k`` steps. While the loads of one
        step (activation tile and weight tile) outlast its COMPUTE (``rows`` cycles) but its weight
        tile alone does not, two tiles share each activation tile. Needs a third accumulator region."""
        weights = tile_words * wgt_beats + 1 if weights_load else 0
        fits = order == "n_outer" and n_n > 1 and n_k > 1 and regions >= 3
        return 2 if fits and weights < rows < rows * act_beats + 1 + weights else 1

    chunks = [(m0, min(chunk, m - m0)) for m0 in range(0, m, chunk)]
    w_tiles = _weight_tiles(spec, config, kt, nt, n_k, n_n)
    a_tiles = _act_tiles(spec, config, kt, n_k)
    steps, chunk_tiles = [], {}
    for ci, (m0, rows) in enumerate(chunks):
        g = 1
        if order == "k_outer":
            nest = [(t, kk) for kk in range(n_k) for t in range(n_n)]
        else:
            g = lead_group(rows, not resident or ci == 0)
            nest = ([(t, kk) for kk in range(n_k) for t in range(g)]
                    + [(t, kk) for t in range(g, n_n) for kk in range(n_k)])
        loaded = set()                      # K tiles of this chunk whose activations are loaded
        for t, kk in nest:
            wgt_addr = ((t * n_k + kk) if resident else len(steps) % slots) * tile_words
            act_addr = ((len(steps) % act_slots) * chunk if stream
                        else (ci % 2) * (config.act_depth // 2) + kk * chunk)
            krows, width = min(kt, k - kk * kt), min(nt, n - t * nt)
            loads = []
            if not resident or ci == 0:
                words = w_tiles[kk][t]                  # (the same array each time: padded once)
                loads.append(Load(Buf.WGT, wgt_addr, len(words), words))
            if kk not in loaded or stream:   # activation tiles are loaded once per chunk (n_stream: per step)
                if kk not in loaded:
                    chunk_tiles[kk] = a_tiles[kk][m0:m0 + rows]
                    loaded.add(kk)
                load = Load(Buf.ACT, act_addr, rows, chunk_tiles[kk])
                if g > 1 and 0 < kk and t == 0:
                    # In a lead group, K tile kk's activations load while the last g steps compute: cut
                    # in g row pieces, one with the loads of each of the last g - 1 steps and of this one
                    # (a step's loads stream in during the COMPUTE before it).
                    for owner, (lo, count) in zip([*steps[len(steps) - g + 1:], None], row_pieces(rows, g)):
                        (loads if owner is None else owner.loads).append(load.piece(lo, count))
                else:
                    loads.append(load)
            activate = None
            if kk == n_k - 1 and spec.raw:  # int32 sums straight from the accumulators
                activate = Activate(acc_addr(ci, t), 0, rows, 1, None, tag=(m0, rows, t * nt, width), raw=True)
            elif kk == n_k - 1:             # alternate banks: load one while the other is read
                bias = np.zeros(config.cols, np.int64)
                bias[:width] = spec.bias[t * nt:t * nt + width]
                activate = Activate(acc_addr(ci, t), 0, rows, 1, bias, bank=(ci * n_n + t) % 2,
                                    tag=(m0, rows, t * nt, width), quant=tile_quant(spec.multiplier, spec.shift, t * nt, width, nt),
                                    perchan=per_channel(spec.multiplier))
            steps.append(Step(0, loads, wgt_addr, krows, width, act_addr, acc_addr(ci, t), rows, kk > 0,
                              activate))
    emit_steps(e, steps, preamble)
    return GemmProgram(e.program(), spec, config, chunks, n_n)


def _weight_tiles(spec: GemmSpec, config: NpuConfig, kt: int, nt: int, n_k: int, n_n: int) -> list:
    """``[kk][t]``: the weight SRAM words of K tile ``kk``, N tile ``t`` (zero-padded), packed once."""
    k, n = spec.w.shape
    padded = np.zeros((n_k * kt, n_n * nt), np.int64)
    padded[:k, :n] = spec.w
    return [[_wgt_words(spec, config, padded[kk * kt:(kk + 1) * kt, t * nt:(t + 1) * nt])
             [:weight_words(spec.precision, min(kt, k - kk * kt))] for t in range(n_n)] for kk in range(n_k)]


def _act_tiles(spec: GemmSpec, config: NpuConfig, kt: int, n_k: int) -> list:
    """``[kk]``: the activation SRAM words of every row of A for K tile ``kk`` (zero-padded), packed once."""
    m, k = spec.a.shape
    padded = np.zeros((m, n_k * kt), np.int64)
    padded[:, :k] = spec.a
    return [_act_words(spec, config, padded[:, kk * kt:(kk + 1) * kt]) for kk in range(n_k)]


def _schedule_os(config: NpuConfig, spec: GemmSpec) -> GemmProgram:
    """Output-stationary program (see the module docstring); raises ``ValueError`` if it cannot fit."""
    m, k, n = spec.shape
    rows, cols, p = config.rows, config.cols, spec.precision
    per_step = 2 if p == Precision.A4W4 else 1                  # K values per step
    steps = -(-k // per_step)
    if steps > config.act_depth // 2:
        raise ValueError(f"K={k} needs {steps} activation words per output tile; half the activation "
                         f"SRAM ({config.act_depth // 2} words) must hold them")
    n_n, n_m = -(-n // cols), -(-m // rows)
    resident = n_n * stream_weight_words(p, steps) <= config.wgt_depth
    # K chunk (in steps) when weights stream: two chunks share the weight SRAM; a8w4 chunks are whole words.
    chunk = steps if resident else min(steps, config.wgt_depth // 2 * (2 if p == Precision.A8W4 else 1))
    if chunk < 1 or 2 * rows > config.acc_depth:
        raise ValueError(f"the weight SRAM ({config.wgt_depth} words) or accumulator SRAM "
                         f"({config.acc_depth} words) is too small for one output tile")
    k_chunks = [(s0, min(chunk, steps - s0)) for s0 in range(0, steps, chunk)]
    w_words = [_wgt_words(spec, config, _pad(spec.w[:, t * cols:(t + 1) * cols], steps * per_step + (
        steps * per_step) % 2, cols)) for t in range(n_n)]           # int4: even K rows, two per word

    def act_words(mt):
        block = _pad(spec.a[mt * rows:(mt + 1) * rows], rows, steps * per_step)     # rows x K
        return (numerics.pack_int4(block) if p == Precision.A4W4 else block.astype(np.int8).view(np.uint8)).T

    e = Emitter(config)
    multiplier, shift = config_requant(spec.multiplier, spec.shift)
    e.configure(multiplier=multiplier, shift=shift, out_zp=spec.out_zp, qmin=spec.qmin,
                qmax=spec.qmax, lut=spec.lut, precision=p, single_round=spec.single_round)
    act_base = [0, config.act_depth // 2]
    e.load(Load(Buf.ACT, act_base[0], steps, act_words(0)))
    pending, tiles, chunks = None, 0, []
    for mt in range(n_m):
        m0, mrows = mt * rows, min(rows, m - mt * rows)
        chunks.append((m0, mrows))
        for t in range(n_n):
            ncols = min(cols, n - t * cols)
            slot = tiles % 2
            for kk, (s0, count) in enumerate(k_chunks):
                w0, w_count = stream_weight_words(p, s0), stream_weight_words(p, count)
                waddr = (t * stream_weight_words(p, steps) + w0 if resident
                         else ((tiles * len(k_chunks) + kk) % 2) * (config.wgt_depth // 2))
                if not resident or mt == 0:          # resident weights load once, with the first M tile
                    e.load(Load(Buf.WGT, waddr, w_count, w_words[t][w0:w0 + w_count]))
                e.cmd(Opcode.COMPUTE, aaddr=act_base[mt % 2] + s0, accaddr=slot * rows, rows=count,
                      accumulate=kk > 0, waddr=waddr, mrows=mrows, ncols=ncols)
            # The next M tile's activations load while this one computes: after the first tile, or after
            # the last one while the first M tile still loads every tile's weights.
            if mt + 1 < n_m and t == (n_n - 1 if mt == 0 and resident else 0):
                e.load(Load(Buf.ACT, act_base[(mt + 1) % 2], steps, act_words(mt + 1)))
            if pending is not None:
                e.activate(pending)
            bias = np.zeros(cols, np.int64)
            bias[:ncols] = spec.bias[t * cols:t * cols + ncols]
            pending = Activate(slot * rows, 0, mrows, 1, bias, bank=slot, tag=(m0, mrows, t * cols, ncols),
                               quant=tile_quant(spec.multiplier, spec.shift, t * cols, ncols, cols),
                               perchan=per_channel(spec.multiplier))
            tiles += 1
    e.activate(pending)
    return GemmProgram(e.program(), spec, config, chunks, n_n)


def random_gemm(m: int, k: int, n: int, precision: str | Precision = "int8", act: str = "none",
                seed: int = 0, per_channel: bool = False, single_round: bool = False) -> GemmSpec:
    """Random operands with realistic scales: outputs spread over the int8 (int4) range.
    ``per_channel``: each output channel gets its own requantization scale (weight scales of a
    per-channel quantized layer: the output scale times 0.25 .. 4)."""
    for name, value in (("m", m), ("k", k), ("n", n)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"GEMM dimension {name} must be a positive int, got {value!r}")
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")
    precision = Precision.from_label(precision) if isinstance(precision, str) else Precision(precision)
    rng = np.random.default_rng(seed)
    a_bits = 4 if precision == Precision.A4W4 else 8
    w_bits = 8 if precision == Precision.INT8 else 4
    out_bits = 4 if precision == Precision.A4W4 else 8
    a = rng.integers(*numerics.int_range(a_bits), endpoint=True, size=(m, k))
    w = rng.integers(*numerics.int_range(w_bits), endpoint=True, size=(k, n))
    acc_std = max(1.0, float(np.sqrt(k)) * a.std() * w.std()) if a.size > 1 else 1.0
    bias = rng.integers(-int(acc_std), int(acc_std) + 1, size=n)
    out_lo, out_hi = numerics.int_range(out_bits)
    # acc scale 1.0 (integers); map +-3 std onto the output range.
    out_scale = 6.0 * acc_std / (out_hi - out_lo)
    lut = None
    if act in ("none", "relu", "relu6"):
        out_zp = int(rng.integers(out_lo // 4, out_hi // 4 + 1))
        # Real value = acc / acc_std * 2, so relu6 clips at 3 standard deviations.
        qmin, qmax = numerics.relu_bounds(act, out_scale * 2.0 / acc_std, out_zp, out_bits)
        multiplier, shift = numerics.quantize_multiplier(1.0 / out_scale)
    else:
        mid_scale = 6.0 * acc_std / 255            # requantize to an int8 intermediate, then the LUT
        multiplier, shift = numerics.quantize_multiplier(1.0 / mid_scale)
        out_zp, qmin, qmax = 0, -128, 127
        # The LUT sees the accumulator in units of its std: x = q * mid_scale / acc_std.
        lut = numerics.build_lut(act, mid_scale / acc_std, 0, 4.0 / (out_hi + 1), 0, out_bits)
    if per_channel:
        pairs = [numerics.quantize_multiplier(multiplier / 2 ** 31 * 2.0 ** shift * f)
                 for f in 2.0 ** rng.uniform(-2, 2, size=n)]
        multiplier, shift = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return GemmSpec(a, w, bias, multiplier, shift, out_zp, qmin, qmax, lut, precision, single_round)
