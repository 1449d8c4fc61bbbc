"""Compile a ``QuantModel`` for an ``NpuConfig`` into NPU programs, and run them.

Stages and fusion
-----------------
Layers are grouped into *stages*; one stage is one ``Program``. Inside a stage, every layer but the last
writes its output into the activation SRAM (``ACTIVATE dest=0``) where the next layer reads it: no host
round trip. ``ACTIVATE`` fills lanes ``0..min(rows, cols)-1`` of each activation word, so a producer that
stays on chip uses N tiles of ``min(rows, cols)`` columns and output tile t, position p is directly one
K tile of the consumer (MatMul/Gemm after MatMul/Gemm, or after Conv + Flatten: a conv's rows are stored
position-major, so position p of all samples is one contiguous block). The last layer of a stage sends
its result to the host (``dest=1``); a new stage starts where the layout does not chain, where the
on-chip activations would leave micro-batches too small to fill the array's pipeline (fewer rows than
its drain time), or everywhere with ``fuse=False``. Nothing is truncated: a model that does not fit is
split.

Convolutions read their input *in place* (``direct_conv``, ``_direct_segs``): one K tile per (kernel
tap, group of ``rows`` input channels), each output row of the GEMM read as runs of ``COMPUTE`` rows
over the input as it lies (``AStep``: consecutive words, every other one for a stride of 2, or the
layer's padding row, a word of its input zero point at the top of the SRAM, for taps outside the
input), so no im2col rows cross the host bus. A stage's first convolution does so when that moves fewer
words than im2col (its input loads once, row by row, group by group); a convolution after a convolution
always does, reading N tile g of its producer as channel group g: such a chain keeps its rows
sample-major ((sample, position) order), while a chain of fully connected layers after the first keeps
them position-major, so the two kinds do not mix in one stage. On-chip K tiles whose weights are all
zero are skipped (a depthwise convolution's block-diagonal weights).

Residual blocks: a model whose layers read more than the layer before (``QLayer.source``, ``QAdd``) is
one stage (``one_program``). A convolution may read any earlier convolution's or ADD's output, or the
stage input when the first layer holds it in channel groups (``grouped_input``); an ADD reads two such
tensors, laid out alike, with elementwise ``ACTIVATE``s (``CHUNK_ROWS`` rows and one channel group
each), its tables (``LOAD_LUT table=EW``) loaded while the layers before it compute. Each on-chip output
takes the first region whose tensor no later layer reads (``_assign_regions``: a plain chain's outputs
alternate between two), the stage input keeps its own until its last reader, and the next
micro-batch's input loads only after that.

A *raw* layer (``QLayer.raw``: ONNX's MatMulInteger / ConvInteger, whose output is the int32 sum) is the
last of its model: its write-back is a ``STORE`` of the accumulator rows (int32, four bytes a value),
and the host adds its bias while decoding (the activation unit, which adds it otherwise, is bypassed).

Inside a stage the batch is cut into micro-batches sized to the activation SRAM; each layer runs over
the micro-batch in accumulator chunks (``CHUNK_ROWS``), N tiles, then K tiles, emitted by
``schedule.emit_steps`` (software pipelined; ``CONFIG`` + ``LOAD_LUT`` where the layer changes, a barrier).
In a chain the next micro-batch's input loads while the current one runs its later layers (the input
region is dead by then); a single-layer stage treats its GEMM rows as the units and alternates the two
halves of the activation SRAM, so any M fits. Weights stay resident in the weight SRAM when the whole
stage's tiles fit; otherwise a layer whose tiles fit loads them once per micro-batch, and the others
cycle through a ring of slots.

One schedule is built per compile; ``CompiledModel.program(x)`` assembles its data-in stream for an
input. With ``profile=True`` a ``COUNTERS`` snapshot follows every layer's last ``ACTIVATE`` (just
before the ``CONFIG`` barrier that follows anyway), and ``run_model`` reports counters per layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from opennpu.config import NpuConfig
from opennpu.golden import numerics
from opennpu.golden.isa import AStep, Buf, ErrorCode
from opennpu.golden.model import COUNTER_BEATS_BYTES, reported_counters
from opennpu.golden.program import COUNTER_NAMES, Program, Result, decode_counters
from opennpu.golden.timing import array_latency

from .depthwise import fir_dw_config, fir_passes, fir_period, fir_runs, fir_slack, fir_span, fir_tile
from .elementwise import add_tables
from .qlayers import QAdd, QLayer, QuantModel
from .schedule import (Activate, Deferred, Elementwise, Emitter, Load, Step, TableLoad, config_requant, emit_steps,
                       per_channel, tile_quant)

__all__ = ["LayerInfo", "CompiledModel", "ModelRun", "direct_conv", "grouped_input", "one_program", "compile_model",
           "run_model"]

#: ``Emitter.schedule_limit`` of a stage with a convolution read in place: its output rows are short
#: COMPUTE runs (two or three commands an output row and tap), whose input LOADs the list scheduler
#: interleaves (a 16-channel 3x3 layer over 64 6x6 samples on 8x8: 19,168 commands, 83,276 cycles in
#: 0.9 s of compile; ordered only, 88,284; its im2col rows 83,133).
IN_PLACE_LIMIT = 65536

#: Rows per accumulator chunk (at most half the accumulator SRAM). Short chunks let the ACTIVATE of one
#: chunk overlap the COMPUTEs of the next and leave little write-back exposed at a layer's end.
CHUNK_ROWS = 128


@dataclass
class _Seg:
    """One K tile of a layer: the K index feeding each lane (-1: unused), and where its rows are."""
    kidx: np.ndarray
    host: bool                  # loaded from the host (stage input) or produced on chip
    tile: int = 0               # on chip: producer's N tile; direct convolution: input channel group
    pos: int = 0                # on chip: producer's output position
    tap: tuple | None = None    # direct convolution: the kernel tap (row, column) of this K tile
    fir: tuple | None = None    # depthwise COMPUTE: the kernel rows (i0, i1) of this pass (``compiler/depthwise.py``)


@dataclass
class _Plan:
    """One layer inside a stage."""
    index: int
    layer: QLayer
    rows_per_unit: int          # GEMM rows per stage unit
    segs: list
    ntiles: list                # [(n0, width)]
    dest: int                   # 0: activation SRAM, 1: host
    in_base: int = 0            # host segments' region
    out_base: int = 0           # on-chip output tiles' region
    slot0: int = 0              # first weight slot
    slot_of: dict = None        # (K tile, N tile) that runs -> its slot from ``slot0`` on
    live: list = None           # per N tile, the K tiles it runs (``_live_segs``)
    pad_addr: int = 0           # a convolution read in place: the word holding its padding row
    src: tuple = ()             # the plans it reads (positions in the stage; -1: the stage input)
    region: int = 0             # on-chip output: its region (``_assign_regions``)
    fir: list | None = None     # a depthwise convolution on the depthwise COMPUTE: its passes' kernel rows

    @property
    def in_place(self) -> bool:
        """A convolution that reads its input where it lies (``_direct_segs``)."""
        return bool(self.segs) and self.segs[0].tap is not None


class _HostRows(Deferred):
    """Rows ``row0 .. row0+rows`` and K columns ``k0 .. k1`` of the stage's input matrix."""

    def __init__(self, row0, rows, k0, k1, width):
        self.row0, self.rows, self.k0, self.k1, self.width = row0, rows, k0, k1, width

    def words(self, source):
        block = np.zeros((self.rows, self.width), np.int64)
        block[:, :self.k1 - self.k0] = source[self.row0:self.row0 + self.rows, self.k0:self.k1]
        return block.astype(np.int8).view(np.uint8)


@dataclass
class _Stage:
    plans: list
    units: int                  # samples, or GEMM rows for a single-layer stage not read in place
    mb: int                     # units per micro-batch
    emitter: Emitter = None
    sample_major: bool = False  # rows in (sample, position) order: a convolution reads its input in place

    @property
    def micro_batches(self) -> list:
        return [(u0, min(self.mb, self.units - u0)) for u0 in range(0, self.units, self.mb)]

    @property
    def unit_rows(self) -> bool:
        return len(self.plans) == 1


@dataclass
class LayerInfo:
    """Static facts about one compiled layer (``m`` = GEMM rows for the whole batch)."""
    index: int
    name: str
    op: str
    m: int
    k: int
    n: int
    stage: int
    input: str                  # "host" or "chip"
    output: str                 # "chip" or "host"
    k_tiles: int
    n_tiles: int
    lut: bool

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n


def _input_words(first: _Plan) -> int:
    """Activation words a stage's input takes per unit: one per position and channel group of an input
    read in place, else one per GEMM row and K tile."""
    if first.in_place:
        _, h, w = first.layer.conv.in_shape
        return len({seg.tile for seg in first.segs}) * h * w
    return len(first.segs) * first.rows_per_unit


def _assign_regions(plans) -> list:
    """Words per unit of the regions the on-chip outputs go to (after the input's), each plan's in its
    ``region``: the first region whose output is dead, read by no plan from this one on (the plans that
    read it are done: every layer starts behind a CONFIG barrier), else a new one. A chain's outputs
    alternate between two regions; an output that a later layer reads again (a residual block's input)
    keeps its region until then."""
    last_read = {}
    for q, plan in enumerate(plans):
        for src in plan.src:
            last_read[src] = q
    sizes, owner = [], []
    for k, plan in enumerate(plans):
        if plan.dest != 0:
            continue
        free = [r for r, o in enumerate(owner) if last_read.get(o, o) < k]
        plan.region = free[0] if free else len(sizes)
        if not free:
            sizes.append(0)
            owner.append(k)
        owner[plan.region] = k
        sizes[plan.region] = max(sizes[plan.region], len(plan.ntiles) * plan.rows_per_unit)
    return sizes


def _words_per_unit(plans) -> int:
    return _input_words(plans[0]) + sum(_assign_regions(plans))


def direct_conv(layer: QLayer, config: NpuConfig) -> bool:
    """Whether a convolution that starts a stage reads its input where it lies in the activation SRAM
    (loaded once, as it is: one word per input position and group of ``rows`` channels) instead of
    im2col rows from the host: one K tile per (kernel tap, channel group), each output row read as runs
    of ``COMPUTE`` rows (``AStep``: stride 1 or 2 along the row; the padding row of zero points for taps
    outside the input). It must move fewer words over the host bus than the im2col rows (not so: a 1x1
    convolution), take no more K tiles than they do, its width stride be 1 or 2, and one sample's input
    fit half the SRAM (beside the padding row)."""
    conv = layer.conv
    if conv is None or conv.stride[1] not in (1, 2):
        return False
    channels, h, w = conv.in_shape
    groups = -(-channels // config.rows)
    in_place, im2col = _tiles_in_place(layer, config)
    return (groups * h * w < conv.positions * im2col and in_place <= im2col
            and groups * h * w <= _capacity(config, 1, 1))


def grouped_input(layer: QLayer, config: NpuConfig) -> bool:
    """Whether a stage that starts with ``layer`` holds its input in channel groups, as a convolution's
    output lies on chip (so that later layers of the stage can read it too): read in place
    (``direct_conv``), or the im2col rows of a 1x1 convolution of stride 1 without padding (one K tile
    per channel group, a row per position: the same words)."""
    conv = layer.conv
    if conv is None:
        return False
    pointwise = conv.kernel == (1, 1) and conv.stride == (1, 1) and not any(conv.pads)
    return direct_conv(layer, config) or (pointwise and config.rows <= config.cols)


def _direct_need(conv, end: int) -> int:
    """Input positions (sample-major, row-major) that GEMM rows ``0 .. end`` of a micro-batch read."""
    _, h, w = conv.in_shape
    ho, wo = conv.out_hw
    sample, p = divmod(end - 1, ho * wo)
    last = min(h - 1, p // wo * conv.stride[0] + (conv.kernel[0] - 1) * conv.dilation[0] - conv.pads[0])
    return sample * h * w + (last + 1) * w if last >= 0 else sample * h * w


def _direct_segs(layer: QLayer, config: NpuConfig, host: bool) -> list:
    """The K tiles of a convolution read in place: tap (i, j) of channels ``g * rows ..`` (K index ``(c, i,
    j)``), group by group (an input from the host loads group by group, so the first group's taps run while
    the next one loads; on chip, group g is the producer's N tile g)."""
    channels = layer.conv.in_shape[0]
    kh, kw = layer.conv.kernel
    segs = []
    for g, c0 in enumerate(range(0, channels, config.rows)):
        c = np.arange(c0, min(c0 + config.rows, channels))
        segs += [_Seg(c * kh * kw + i * kw + j, host, tile=g, tap=(i, j)) for i in range(kh) for j in range(kw)]
    return segs


def _direct_runs(conv, tap: tuple, group_base: int, m0: int, rows: int, pad_addr: int) -> tuple:
    """The ``COMPUTE`` runs of GEMM rows ``m0 .. m0+rows`` (of a micro-batch, (sample, output position)
    order) for one kernel tap, the channel group's input at ``group_base`` (sample-major, row-major):
    ``(act_addr, row offset, rows, astep)``, an output row's positions whose input lies inside read it
    (stride 1 or 2), the others the padding row; runs that continue one another are merged."""
    _, h, w = conv.in_shape
    ho, wo = conv.out_hw
    (sh, sw), (dh, dw) = conv.stride, conv.dilation
    pt, pl = conv.pads[:2]
    dy, dx = tap[0] * dh - pt, tap[1] * dw - pl
    astep = AStep.UNIT if sw == 1 else AStep.DOUBLE
    runs, r, end = [], m0, m0 + rows
    while r < end:
        sample, p = divmod(r, ho * wo)
        y, x0 = divmod(p, wo)
        x1 = min(wo, x0 + end - r)
        iy = y * sh + dy
        lo, hi = max(x0, -(dx // sw)), min(x1, (w - 1 - dx) // sw + 1)   # inside: 0 <= x * sw + dx < w
        if not 0 <= iy < h or lo >= hi:
            lo = hi = x1
        base = group_base + (sample * h + iy) * w + dx
        for xa, xb, inside in ((x0, lo, False), (lo, hi, True), (hi, x1, False)):
            if xb > xa:
                run = (base + xa * sw, r - m0 + xa - x0, xb - xa, astep) if inside else \
                    (pad_addr, r - m0 + xa - x0, xb - xa, AStep.HOLD)
                if runs and _continues(runs[-1], run):
                    last = runs[-1]
                    runs[-1] = (last[0], last[1], last[2] + run[2], last[3])
                else:
                    runs.append(run)
        r += x1 - x0
    return tuple(runs)


def _continues(run: tuple, nxt: tuple) -> bool:
    """``nxt`` reads on where ``run`` stops, into the rows right after it."""
    act, offset, rows, astep = run
    return nxt[3] == astep and nxt[1] == offset + rows and nxt[0] == act + rows * AStep(astep).words


def _tiles_in_place(layer: QLayer, config: NpuConfig) -> tuple:
    """(K tiles of a convolution read in place, K tiles of its im2col rows)."""
    taps = layer.conv.kernel[0] * layer.conv.kernel[1]
    return taps * -(-layer.conv.in_shape[0] // config.rows), -(-layer.k // config.rows)


def _reads_in_place(shape: tuple, layer: QLayer | QAdd, config: NpuConfig) -> bool:
    """Whether convolution (or ADD) ``layer`` can read a tensor of per-sample ``shape`` laid out in channel
    groups (a convolution's or ADD's output where its ``ACTIVATE`` left it: N tile g is channel group g,
    ``min(rows, cols)`` lanes a tile, ``rows`` channels a group; or a stage input read in place) where it
    lies: a depthwise convolution on the depthwise COMPUTE, or a convolution whose width stride is 1 or 2
    and that takes no more K tiles than its im2col rows would (few channels leave lanes of every tap's K
    tile idle)."""
    if tuple(shape) != tuple(layer.in_shape) or config.rows > config.cols:
        return False
    if isinstance(layer, QAdd):
        return True
    if layer.conv is None:
        return False
    if fir_passes(layer, config):                  # (the depthwise COMPUTE reads it as it lies)
        return True
    in_place, im2col = _tiles_in_place(layer, config)
    return layer.conv.stride[1] in (1, 2) and in_place <= im2col


def _grouped(layer: QLayer | QAdd) -> bool:
    """A layer whose output stays on chip in channel groups (a convolution or an ADD)."""
    return layer.conv is not None or isinstance(layer, QAdd)


def _stage_sources(model: QuantModel, indices: list) -> list | None:
    """Per layer of ``indices``, what it reads as positions in the stage (-1: the stage input, what the
    first layer reads); None if a later layer reads a tensor from outside the stage."""
    position = {i: q for q, i in enumerate(indices)}
    given = model.sources(indices[0])[0]
    srcs = [(-1,)]
    for i in indices[1:]:
        srcs.append(tuple(position.get(src, -1 if src == given else None) for src in model.sources(i)))
        if None in srcs[-1]:
            return None
    return srcs


def _chains(model: QuantModel, config: NpuConfig, indices: list) -> bool:
    """Whether ``indices`` may form one stage: every layer after the first either a fully connected one
    reading the layer before (rows position-major: position p of all samples is one block, today's
    chains), or a convolution or ADD that reads its sources in place (rows sample-major: the layer
    before, an earlier convolution or ADD, or the stage input if the first layer reads that in place),
    not both."""
    srcs = _stage_sources(model, indices)
    if srcs is None:
        return False
    layers = [model.layers[i] for i in indices]
    if not any(_grouped(layer) for layer in layers[1:]):
        return all(src == (q,) for q, src in enumerate(srcs[1:]))
    for layer, src in zip(layers[1:], srcs[1:]):
        for q in src:
            producer_grouped = _grouped(layers[q]) if q >= 0 else grouped_input(layers[0], config)
            shape = layers[q].out_shape if q >= 0 else layers[0].in_shape
            if not producer_grouped or not _reads_in_place(shape, layer, config):
                return False
    return True


def _ntiles(n: int, width: int) -> list:
    return [(n0, min(width, n - n0)) for n0 in range(0, n, width)]


def _plan_stage(model: QuantModel, config: NpuConfig, indices: list, batch: int) -> _Stage:
    lanes = min(config.rows, config.cols)
    layers = [model.layers[i] for i in indices]
    in_place = direct_conv(layers[0], config)
    sample_major = any(_grouped(layer) for layer in layers[1:]) or (len(layers) == 1 and in_place)
    srcs = _stage_sources(model, indices)
    plans = []
    for j, (i, layer) in enumerate(zip(indices, layers)):
        dest = 1 if j == len(indices) - 1 else 0
        ntiles = _ntiles(layer.n, config.cols if dest and not isinstance(layer, QAdd) else lanes)
        passes = fir_passes(layer, config) if j else None     # (on chip only: a first layer loads its K tiles)
        if isinstance(layer, QAdd):
            segs = []
        elif j == 0 and sample_major and in_place:
            segs = _direct_segs(layer, config, True)
        elif j == 0:
            segs = [_Seg(np.arange(k0, min(k0 + config.rows, layer.k)), True)
                    for k0 in range(0, layer.k, config.rows)]
        elif passes:
            ntiles = _ntiles(layer.n, config.rows)       # (channel group g: N tile g, a column a channel)
            segs = [_Seg(np.arange(fir_span(layer, rows)), False, tile=g, fir=rows)
                    for g in range(len(ntiles)) for rows in passes]
        elif layer.conv is not None:
            segs = _direct_segs(layer, config, False)
        else:
            prod = plans[-1]
            positions = prod.layer.positions
            groups: dict = {}
            for k in range(layer.k):               # consumer K index = producer's flat output index
                col, pos = divmod(k, positions)
                t, lane = divmod(col, lanes)
                kidx = groups.setdefault((t, pos), np.full(prod.ntiles[t][1], -1))
                kidx[lane] = k
            segs = [_Seg(kidx, False, t, pos) for (t, pos), kidx in sorted(groups.items())]
        rows_per_unit = 1 if len(indices) == 1 and not sample_major else layer.positions
        plans.append(_Plan(i, layer, rows_per_unit, segs, ntiles, dest, src=srcs[j],
                           fir=passes or None))
    units = batch if len(indices) > 1 or sample_major else batch * layers[0].positions
    capacity = _capacity(config, len(indices), _reserved(plans, config))
    return _Stage(plans, units, min(units, capacity // _words_per_unit(plans)), sample_major=sample_major)


def _capacity(config: NpuConfig, layers: int, reserved: int) -> int:
    """Activation words one micro-batch may use: half the SRAM for a single layer (micro-batches
    alternate halves), all of it for a chain (the input region is dead once its last reader is done,
    so the next micro-batch's input loads during the later layers instead); less the top ``reserved``
    words (``_reserved``)."""
    return (config.act_depth - reserved) // 2 if layers == 1 else config.act_depth - reserved


def _reserved(plans: list, config: NpuConfig) -> int:
    """Words at the top of the activation SRAM that a stage keeps out of its regions: the padding rows of
    the layers that read their input in place, and below them the words past a tensor's end that a
    depthwise COMPUTE's range may name (``depthwise.fir_slack``)."""
    return sum(plan.in_place for plan in plans) + max([fir_slack(plan.layer, config) for plan in plans if plan.fir],
                                                      default=0)


def _groups(model: QuantModel, config: NpuConfig, batch: int, fuse: bool) -> list:
    """The layers of each stage: a layer joins the stage before when it chains and the stage still fits."""
    groups = [[0]]
    for i in range(1, len(model.layers)):
        chained = groups[-1] + [i]
        if fuse and _chains(model, config, chained) and _chain_fits(_plan_stage(model, config, chained, batch),
                                                                    batch, config):
            groups[-1] = chained
        else:
            groups.append([i])
    return groups


def one_program(model: QuantModel, config: NpuConfig, batch: int) -> bool:
    """Whether ``model`` compiles to one stage (one program, no host round trip) for ``batch``: what a model
    whose layers read more than the layer before (``QuantModel.is_graph``) needs."""
    return len(_groups(model, config, batch, True)) == 1


def _plan_stages(model: QuantModel, config: NpuConfig, batch: int, fuse: bool) -> list:
    groups = _groups(model, config, batch, fuse)
    if model.is_graph and len(groups) > 1:
        raise ValueError(f"a model whose layers read more than the layer before must compile to one program; "
                         f"this one splits into {len(groups)} for batch {batch} (``one_program`` says so first)")
    stages = [_plan_stage(model, config, g, batch) for g in groups]
    for stage in stages:
        if stage.mb < 1:
            layer = stage.plans[0].layer
            raise ValueError(f"layer {layer.name}: K={layer.k} needs {len(stage.plans[0].segs)} activation "
                             f"words per row; half the activation SRAM ({config.act_depth // 2} words) "
                             f"cannot hold one row")
    return stages


def _chain_fits(stage: _Stage, batch: int, config: NpuConfig) -> bool:
    """A chain is worth it when its micro-batches hold whole samples (a sample-major chain: its COMPUTE
    runs are output rows whatever the micro-batch), or at least ``_min_rows`` of them."""
    return stage.mb >= (1 if stage.sample_major else min(batch, _min_rows(config)))


def _min_rows(config: NpuConfig) -> int:
    """Fewest rows per COMPUTE worth chaining for: below the array's drain time a COMPUTE costs the
    drain anyway, so tiny micro-batches would be slower than a host round trip."""
    return array_latency(config.rows, config.cols) + 3


def _weight_words(config: NpuConfig, w: np.ndarray, seg: _Seg, n0: int, width: int) -> np.ndarray:
    tile = np.zeros((len(seg.kidx), config.cols), np.int64)
    valid = seg.kidx >= 0
    tile[valid, :width] = w[seg.kidx[valid], n0:n0 + width]
    return tile.astype(np.int8).view(np.uint8)


def _prefetch(sources: list, targets: list):
    """Move the activation loads of ``sources`` (the next micro-batch's first layer) onto ``targets`` (the
    later layers of this one), as many rows as half the targets' COMPUTE rows, in pieces of at most
    half a target's rows, so that the load unit is free again by the next step (a busy load unit would
    hold the in-order dispatcher, LOAD_BIAS included). The rest stay where they were."""
    budget = sum(step.rows // 2 for step in targets)
    t, room = 0, targets[0].rows // 2
    for step in sources:
        keep = []
        for load in step.loads:
            if load.buf != Buf.ACT or load.rows > budget:
                keep.append(load)
                continue
            budget -= load.rows
            done = 0
            while done < load.rows:
                while room == 0 and t + 1 < len(targets):
                    t += 1
                    room = targets[t].rows // 2
                size = min(load.rows - done, max(room, 1))
                targets[t].loads.append(_piece(load, done, size))
                done, room = done + size, max(room - size, 0)
        step.loads = keep


def _piece(load: Load, lo: int, rows: int) -> Load:
    """Rows ``lo .. lo+rows`` of a host activation load."""
    p = load.payload
    return Load(load.buf, load.addr + lo, rows, _HostRows(p.row0 + lo, rows, p.k0, p.k1, p.width))


def _live_segs(plan: _Plan) -> list:
    """Per N tile, the K tiles that run: all of them where the host loads a K tile's im2col rows with it,
    else (on-chip inputs, an input read in place, which loads apart from its K tiles) the tiles whose
    weights are not all zero (a depthwise convolution's block-diagonal weights: one channel group of K
    tiles per N tile); at least one runs, to write the accumulators."""
    every = list(range(len(plan.segs)))
    if plan.fir:                                   # (N tile g: its channel group's passes)
        return [[si for si, seg in enumerate(plan.segs) if seg.tile == ti] for ti in range(len(plan.ntiles))]
    if plan.segs[0].host and not plan.in_place:
        return [every] * len(plan.ntiles)
    w = plan.layer.w
    live = []
    for n0, width in plan.ntiles:
        used = [si for si, seg in enumerate(plan.segs) if np.any(w[seg.kidx[seg.kidx >= 0], n0:n0 + width])]
        live.append(used or every[:1])
    return live


def _pad_row(config: NpuConfig, layer: QLayer) -> np.ndarray:
    """The padding row of a convolution read in place: its input zero point in every lane."""
    return np.full((1, config.act_word_bytes), layer.in_q[1] & 0xFF, np.uint8)


def _carry_tables(stage: _Stage, steps: list, begins: list, adds: list):
    """Give each ADD's table load (``TableLoad``) to a step of the layers since the ADD before it (whose
    tables it replaces; the hardware holds one set), so that it loads while they compute: the middle one
    that does not open its layer (a layer's first step's loads go ahead of its CONFIG, which would wait
    for them), else the ADD's own first step."""
    for k, a in enumerate(adds):
        lo = adds[k - 1] + 1 if k else 0
        inner = [s for s in range(begins[lo], begins[a]) if s not in begins]
        host = steps[inner[len(inner) // 2]] if inner else steps[begins[a]]
        host.loads.append(TableLoad(add_tables(stage.plans[a].layer.attrs)))


def _source_addr(stage: _Stage, src: int, group: int, base: int) -> int:
    """Where channel group (N tile) ``group`` of a micro-batch's tensor ``src`` starts (a plan's position in
    the stage: its on-chip output; or -1: the stage input read in place), ``base`` the micro-batch's."""
    if src < 0:
        first = stage.plans[0]
        _, h, w = first.layer.conv.in_shape
        return base + first.in_base + group * stage.mb * h * w
    prod = stage.plans[src]
    return base + prod.out_base + group * stage.mb * prod.rows_per_unit


def _add_steps(stage: _Stage, pi: int, base: int, u0: int, m: int) -> list:
    """The elementwise ``ACTIVATE``s of ADD ``stage.plans[pi]`` over a micro-batch's ``m`` rows (its inputs
    and its output laid out alike: channel group g, then (sample, position)), ``CHUNK_ROWS`` rows and one
    channel group each."""
    plan, steps = stage.plans[pi], []
    for m0 in range(0, m, CHUNK_ROWS):
        rows = min(CHUNK_ROWS, m - m0)
        for ti, (n0, width) in enumerate(plan.ntiles):
            x, y = (_source_addr(stage, src, ti, base) + m0 for src in plan.src)
            out = _source_addr(stage, pi, ti, base) + m0 if plan.dest == 0 else 0
            steps.append(Elementwise(plan.index, x, y, out, rows, plan.dest,
                                     (u0 * plan.rows_per_unit + m0, rows, n0, width)))
    return steps


def _chunk(m: int, cap: int) -> int:
    """Rows per accumulator chunk of ``m`` rows, at most ``cap``: balanced, so that the last ACTIVATE
    before the barrier is short."""
    return -(-m // -(-m // cap))


def _fir_chunk(plan: _Plan, m: int, acc_half: int) -> int:
    """Accumulator chunk of a depthwise COMPUTE: whole output rows, within ``CHUNK_ROWS`` and so that the
    rows its COMPUTEs name (``stride * period`` per output row, the outputs they do not write included)
    stay inside the accumulator half."""
    conv = plan.layer.conv
    wo = conv.out_hw[1]
    cap = max(1, min(CHUNK_ROWS // wo, acc_half // (conv.stride[0] * fir_period(plan.layer))))
    return _chunk(m // wo, cap) * wo


def _fir_step_runs(stage: _Stage, plan: _Plan, seg: _Seg, base: int, m0: int, rows: int, config: NpuConfig) -> tuple:
    """The depthwise COMPUTEs of pass ``seg`` over a micro-batch's rows ``m0 .. m0+rows`` (whole output rows):
    one per sample they touch, ``(act_addr, acc offset, rows, fields)``."""
    _, h, w = plan.layer.conv.in_shape
    ho, wo = plan.layer.conv.out_hw
    group = _source_addr(stage, plan.src[0], seg.tile, base)
    runs, r = [], m0
    while r < m0 + rows:
        sample, y0 = divmod(r // wo, ho)
        y1 = min(ho, y0 + (m0 + rows - r) // wo)
        fields = fir_runs(plan.layer, config, seg.fir, group + sample * h * w, y0, y1)
        runs.append((fields.pop("aaddr"), r - m0, fields.pop("rows"), fields))
        r += (y1 - y0) * wo
    return tuple(runs)


def _emit_stage(stage: _Stage, config: NpuConfig, profile: bool) -> Emitter:
    pads = [plan for plan in stage.plans if plan.in_place]
    for k, plan in enumerate(pads):                # padding rows at the top of the activation SRAM
        plan.pad_addr = config.act_depth - 1 - k
    half, acc_half, kt = _capacity(config, len(stage.plans), _reserved(stage.plans, config)), config.acc_depth // 2, \
        config.rows
    stage.plans[0].in_base = 0                     # regions sized for a full micro-batch
    in_words, sizes = _input_words(stage.plans[0]), _assign_regions(stage.plans)
    for plan in stage.plans:
        if plan.dest == 0:
            plan.out_base = (in_words + sum(sizes[:plan.region])) * stage.mb
    slots = 0
    for plan in stage.plans:
        plan.live = _live_segs(plan) if plan.segs else []
        plan.slot_of = {(si, ti): k for k, (ti, si) in enumerate((ti, si) for ti, live in enumerate(plan.live)
                                                                  for si in live)}
        plan.slot0, slots = slots, slots + len(plan.slot_of)
    adds = [pi for pi, plan in enumerate(stage.plans) if isinstance(plan.layer, QAdd)]
    # the next micro-batch's input may load during the layers after the last one that reads this one's
    prefetch_from = 1 + max(pi for pi, plan in enumerate(stage.plans) if -1 in plan.src)
    resident = slots * kt <= config.wgt_depth      # the whole stage's weights, loaded once
    ring = config.wgt_depth // kt
    # else a layer whose weights fit loads them once per micro-batch (from slot 0: the layers before are
    # done), the others cycle through the ring
    fits = {plan.index: len(plan.slot_of) * kt <= config.wgt_depth for plan in stage.plans}

    steps, loaded, banks, last_bank, tile_count = [], set(), [None, None], 1, 0
    later = []                                     # steps of layers 1.. of the previous micro-batch
    for j, (u0, mu) in enumerate(stage.micro_batches):
        base = (j % 2) * half if stage.unit_rows else 0
        loaded_rows = {}                           # an input read in place: rows loaded per group
        begins = []                                # each plan's first step
        for pi, plan in enumerate(stage.plans):
            begins.append(len(steps))
            cap, m = stage.mb * plan.rows_per_unit, mu * plan.rows_per_unit
            if isinstance(plan.layer, QAdd):
                steps += _add_steps(stage, pi, base, u0, m)
                continue
            w = plan.layer.w
            chunk = _fir_chunk(plan, m, acc_half) if plan.fir else _chunk(m, min(acc_half, CHUNK_ROWS))
            for m0 in range(0, m, chunk):
                rows = min(chunk, m - m0)
                for ti, (n0, width) in enumerate(plan.ntiles):
                    acc_addr = (tile_count % 2) * acc_half
                    tile_count += 1
                    live = plan.live[ti]
                    for si in live:
                        seg = plan.segs[si]
                        opens, closes = si == live[0], si == live[-1]     # the tile's first / last K tile
                        if resident or fits[plan.index]:
                            key = (plan.index, si, ti, None if resident else j)
                            slot = (plan.slot0 if resident else 0) + plan.slot_of[si, ti]
                        else:
                            key, slot = None, len(steps) % ring
                        loads = []
                        if key is None or key not in loaded:
                            loaded.add(key)
                            words = fir_tile(plan.layer, config, n0, width, seg.fir) if plan.fir else \
                                _weight_words(config, w, seg, n0, width)
                            loads.append(Load(Buf.WGT, slot * kt, len(seg.kidx), words))
                        runs = ()
                        if plan.fir:
                            runs = _fir_step_runs(stage, plan, seg, base, m0, rows, config)
                            act_addr = runs[0][0]
                        elif plan.in_place:               # channel group g of the stage input or of its source
                            act_addr = _source_addr(stage, -1 if seg.host else plan.src[0], seg.tile, base)
                            runs = _direct_runs(plan.layer.conv, seg.tap, act_addr, m0, rows, plan.pad_addr)
                            if j == 0 and m0 == 0 and ti == 0 and opens:
                                loads.append(Load(Buf.ACT, plan.pad_addr, 1, _pad_row(config, plan.layer)))
                            if seg.host:
                                # the rows of its group that this chunk reads and no step before loaded,
                                # a LOAD per input row (the list scheduler interleaves the COMPUTEs)
                                _, in_h, in_w = plan.layer.conv.in_shape
                                have = loaded_rows.get(seg.tile, 0)
                                need = max(have, _direct_need(plan.layer.conv, m0 + rows))
                                c0, channels = seg.tile * kt, plan.layer.conv.in_shape[0]
                                for lo in range(have, need, in_w):
                                    count = min(in_w, need - lo)
                                    loads.append(Load(Buf.ACT, act_addr + lo, count, _HostRows(
                                        u0 * in_h * in_w + lo, count, c0, min(c0 + kt, channels), kt)))
                                loaded_rows[seg.tile] = need
                        elif seg.host:
                            act_addr = base + plan.in_base + si * cap + m0
                            if ti == 0:
                                k0 = int(seg.kidx[0])
                                loads.append(Load(Buf.ACT, act_addr, rows, _HostRows(
                                    u0 * plan.rows_per_unit + m0, rows, k0, k0 + len(seg.kidx), kt)))
                        else:                               # position p of the producer's N tile
                            act_addr = _source_addr(stage, plan.src[0], seg.tile, base) + seg.pos * mu + m0
                        activate = None
                        if closes and plan.layer.raw:      # int32 sums to the host
                            activate = Activate(acc_addr, 0, rows, 1, None, tag=(u0 * plan.rows_per_unit + m0,
                                                                                  rows, n0, width), raw=True)
                        elif closes:
                            bias_key = (plan.index, ti)
                            layer = plan.layer
                            if bias_key in banks:                # that bank still holds it
                                bank, bias, quant = banks.index(bias_key), None, None
                            else:                                # load the other bank
                                bank = 1 - last_bank
                                banks[bank] = bias_key
                                bias = np.zeros(config.cols, np.int64)
                                bias[:width] = layer.bias[n0:n0 + width]
                                quant = tile_quant(layer.multiplier, layer.shift, n0, width, config.cols)
                            out_addr = _source_addr(stage, pi, ti, base) + m0 if plan.dest == 0 else 0
                            tag = (u0 * plan.rows_per_unit + m0, rows, n0, width)
                            activate = Activate(acc_addr, out_addr, rows, plan.dest, bias, bank, tag, quant,
                                                per_channel(layer.multiplier))
                            last_bank = bank
                        steps.append(Step(plan.index, loads, slot * kt, len(seg.kidx), width, act_addr,
                                          acc_addr, rows, not opens, activate, runs))
        if j == 0 or len(adds) > 1:                # (one ADD's tables stay loaded)
            _carry_tables(stage, steps, begins, adds)
        if not stage.unit_rows:
            if later:                              # prefetch: this input loads during the last layers
                _prefetch(steps[begins[0]:begins[1]], later)
            later = steps[begins[prefetch_from]:] if prefetch_from < len(begins) else []

    e = Emitter(config, IN_PLACE_LIMIT if any(plan.in_place for plan in stage.plans) else None)
    layers = {plan.index: plan.layer for plan in stage.plans}
    fir_layers = {plan.index for plan in stage.plans if plan.fir}

    def preamble(index):
        layer = layers[index]
        if isinstance(layer, QAdd):                # the output's requantization (tables: ``_carry_tables``)
            at = layer.attrs
            e.configure(multiplier=at.out_multiplier, shift=at.out_shift, out_zp=at.out_zp, qmin=at.qmin,
                        qmax=at.qmax)
            return
        multiplier, shift = config_requant(layer.multiplier, layer.shift)
        image = fir_dw_config(layer) if index in fir_layers else {}
        e.configure(multiplier=multiplier, shift=shift, out_zp=layer.out_zp, qmin=layer.qmin,
                    qmax=layer.qmax, lut=layer.lut, single_round=layer.single_round, **image)

    emit_steps(e, steps, preamble, e.counters if profile else None)
    return e


@dataclass
class ModelRun:
    """What ``run_model`` returns: the model output (as the source model defines it), the int8-grid
    values behind it, counters summed over the stage programs, per-layer counters (profiled builds:
    each layer's share, the snapshots' own data-out traffic removed) and the raw results."""
    outputs: np.ndarray
    values: np.ndarray
    counters: dict
    layer_counters: list | None
    results: list = field(default_factory=list)


class CompiledModel:
    """A model scheduled for one ``NpuConfig`` and batch size. See the module docstring.

    ``layers`` lists ``LayerInfo`` per layer; ``stages`` is the number of programs (host round trips
    between them); ``program(x)`` and ``decode_outputs(result)`` work on single-stage models.
    """

    def __init__(self, model: QuantModel, config: NpuConfig, batch: int, fuse: bool, profile: bool):
        self.model, self.config, self.batch, self.fuse, self.profile = model, config, batch, fuse, profile
        self._stages = _plan_stages(model, config, batch, fuse)
        for stage in self._stages:
            stage.emitter = _emit_stage(stage, config, profile)
        self.layers = []
        for s, stage in enumerate(self._stages):
            for j, plan in enumerate(stage.plans):
                layer = plan.layer
                self.layers.append(LayerInfo(plan.index, layer.name, layer.op, batch * layer.positions, layer.k,
                                             layer.n, s, "host" if j == 0 else "chip",
                                             "host" if plan.dest else "chip", len(plan.segs),
                                             len(plan.ntiles), layer.lut is not None))

    @property
    def stages(self) -> int:
        return len(self._stages)

    @property
    def input_shape(self) -> tuple:
        return (self.batch, *self.model.input.shape)

    def check_input(self, x) -> np.ndarray:
        """Refuse (``ValueError``) an input whose shape or kind does not match; returns it as an array."""
        x = np.asarray(x)
        if x.shape != self.input_shape:
            raise ValueError(f"input {self.model.input.name!r} must have shape {self.input_shape} "
                             f"(compiled batch {self.batch}), got {x.shape}")
        return self.model.check_input(x)

    # -- per stage ------------------------------------------------------------------------------------
    def _stage_program(self, s: int, t: np.ndarray) -> Program:
        """Stage ``s`` program for its input tensor ``t`` (int8 grid, (B, *in_shape) of its first layer)."""
        stage = self._stages[s]
        first = stage.plans[0].layer
        if stage.plans[0].in_place:                          # the input as it is: (sample, y, x) x channels
            x = t.reshape(len(t), *first.in_shape)
            return stage.emitter.program(x.transpose(0, 2, 3, 1).reshape(-1, first.in_shape[0]))
        a = first.matrix(t.reshape(len(t), *first.in_shape))
        if not stage.unit_rows and not stage.sample_major and first.positions > 1:   # position-major rows
            p, k = first.positions, first.k
            a = np.concatenate([a.reshape(self.batch, p, k)[u0:u0 + mu].transpose(1, 0, 2).reshape(-1, k)
                                for u0, mu in stage.micro_batches])
        return stage.emitter.program(a)

    def _decode_stage(self, s: int, outputs: bytes) -> tuple[np.ndarray, list]:
        """Stage data-out -> (last layer's output tensor, [(layer index, counter snapshot)])."""
        c, stage = self.config, self._stages[s]
        last = stage.plans[-1].layer
        row_bytes = {"activate": c.beats(c.cols) * c.bus_bytes, "store": c.beats(4 * c.cols) * c.bus_bytes}
        row_type = {"activate": np.int8, "store": "<i4"}     # int8 results; a raw layer's int32 sums
        snap_bytes = c.beats(COUNTER_BEATS_BYTES) * c.bus_bytes
        expected = sum(tag[1] * row_bytes[kind] if kind != "counters" else snap_bytes
                       for kind, tag in stage.emitter.outputs)
        if len(outputs) != expected:
            raise ValueError(f"stage {s} emitted {len(outputs)} data-out bytes, its program emits {expected}")
        y = np.zeros((self.batch * last.positions, last.n), np.int64)
        snapshots, pos = [], 0
        for kind, tag in stage.emitter.outputs:
            if kind in row_type:
                row0, rows, n0, width = tag
                raw = np.frombuffer(outputs[pos:pos + rows * row_bytes[kind]], row_type[kind]).reshape(rows, -1)
                block = raw[:, :width].astype(np.int64)
                if kind == "store":     # a raw layer's bias is added here, on the host
                    block = numerics.wrap_int32(block + last.bias[n0:n0 + width])
                y[row0:row0 + rows, n0:n0 + width] = block
                pos += rows * row_bytes[kind]
            else:
                snapshots.append((tag, reported_counters(self.config, decode_counters(outputs[pos:pos + snap_bytes]))))
                pos += snap_bytes
        return last.tensor(y, self.batch), snapshots

    # -- single-stage conveniences ------------------------------------------------------------------
    def _single(self):
        if len(self._stages) != 1:
            raise ValueError(f"this model compiles to {len(self._stages)} programs with host round trips "
                             f"between them (im2col or SRAM limits); use run_model")

    def program(self, inputs) -> Program:
        """The one program of a single-stage model, with the data-in stream for ``inputs``."""
        self._single()
        return self._stage_program(0, self.model.quantize_input(self.check_input(inputs)))

    def decode_outputs(self, result: Result) -> np.ndarray:
        """Result of ``program(x)`` -> the model output (as the source model defines it)."""
        self._single()
        return self.model.output_value(self._decode_stage(0, result.outputs)[0])


def compile_model(model, config: NpuConfig | None = None, *, batch: int | None = None, fuse: bool = True,
                  profile: bool = False) -> CompiledModel:
    """Compile a quantized model for ``config`` (default ``NpuConfig()``).

    ``model``: a ``QuantModel``, or an ONNX model (path, bytes, ``onnx.ModelProto``) imported with
    ``onnx_import.import_onnx``. ``batch``: the batch size the programs are built for (default: the
    model's fixed batch, else 1). ``fuse=False`` sends every layer's output to the host (one program
    per layer), the baseline for the DMA saved by on-chip chaining. ``profile=True`` adds per-layer
    ``COUNTERS`` snapshots. Raises ``ValueError`` for models or batch sizes that cannot be compiled.
    """
    if not isinstance(model, QuantModel):
        from .onnx_import import import_onnx
        model = import_onnx(model)
    config = NpuConfig() if config is None else config
    if config.dataflow != "ws":
        raise ValueError(f"the model compiler targets the weight-stationary dataflow, got {config.dataflow!r}")
    fixed = model.input.batch
    if batch is None:
        batch = fixed or 1
    if not isinstance(batch, (int, np.integer)) or batch < 1 or (fixed is not None and batch != fixed):
        raise ValueError(f"batch must be a positive int{f' equal to the model batch {fixed}' if fixed else ''}, "
                         f"got {batch!r}")
    return CompiledModel(model, config, int(batch), fuse, profile)


def run_model(compiled: CompiledModel, inputs, backend="golden") -> ModelRun:
    """Run a compiled model: quantize the input on the host, run each stage program on ``backend`` (a
    name for ``opennpu.sim.driver.Npu`` or an object with ``run(program)``), do the host glue between
    stages (im2col), decode and dequantize the output. Refuses a wrong input shape before anything runs;
    raises ``RuntimeError`` if the NPU rejects a command."""
    x = compiled.check_input(inputs)
    if isinstance(backend, str):
        from opennpu.sim.driver import Npu
        backend = Npu(compiled.config, backend)
    t = compiled.model.quantize_input(x)
    totals = dict.fromkeys(COUNTER_NAMES, 0)
    per_layer = {layer.index: dict.fromkeys(COUNTER_NAMES, 0) for layer in compiled.layers}
    results = []
    c = compiled.config
    snap_bytes = c.beats(COUNTER_BEATS_BYTES) * c.bus_bytes
    for s in range(compiled.stages):
        result = backend.run(compiled._stage_program(s, t))
        if result.error != ErrorCode.OK:
            raise RuntimeError(f"the NPU rejected {result.rejected} command(s) of stage {s}: "
                               f"{ErrorCode(result.error).name}")
        results.append(result)
        t, snapshots = compiled._decode_stage(s, result.outputs)
        for name in COUNTER_NAMES:
            totals[name] += result.counters[name]
        previous = dict.fromkeys(COUNTER_NAMES, 0)
        for i, (index, snap) in enumerate(snapshots):
            for name in COUNTER_NAMES:
                per_layer[index][name] += snap[name] - previous[name]
            if i:                                  # the previous snapshot's own push landed here
                per_layer[index]["dma_out_bytes"] -= snap_bytes
                per_layer[index]["energy_fj"] -= snap_bytes * c.energy.dma_byte_fj
            previous = snap
    layer_counters = [per_layer[layer.index] for layer in compiled.layers] if compiled.profile else None
    return ModelRun(compiled.model.output_value(t), t, totals, layer_counters, results)
