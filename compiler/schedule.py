"""Command emission shared by the GEMM builder and the model compiler.

A tiled computation is a list of ``Step`` objects, one ``PRELOAD`` + ``COMPUTE`` each, with the ``LOAD``s
it needs first and, on the step that finishes an N tile, the ``ACTIVATE`` that writes the tile back.
``emit_steps`` turns them into a software-pipelined command stream for the in-order dispatcher:

* the loads of step s+1 follow the ``COMPUTE`` of step s (weights first, so the next ``PRELOAD`` overlaps
  the activation load);
* a finished tile's ``LOAD_BIAS`` + ``ACTIVATE`` follow its last ``COMPUTE`` (the rows stream out as they
  drain), or the next step's ``PRELOAD`` where the ACT unit is still busy with the tile before, so the
  array never waits for write-back; bias goes to the bank the caller picks, so callers alternate banks
  and the next bias loads while ``ACTIVATE`` reads the other one;
* the first steps' loads are placed so that commands stream behind the unit writing what they read
  (``golden.isa.Wait.STREAM``);
* steps carry a ``group`` (e.g. a layer): where the group changes, the caller's preamble (``CONFIG``,
  ``LOAD_LUT``) is emitted. ``CONFIG`` waits for every unit to be idle, so results always see the
  requantization registers of their own group.

``golden.reorder`` then merges the unit queues of this order (``Emitter.ordered``).

Data-in payloads are either static numpy SRAM words or ``Deferred`` objects resolved when the program is
assembled (the model compiler builds one schedule and assembles it per input).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from opennpu.config import NpuConfig
from opennpu.golden import numerics
from opennpu.golden import reorder
from opennpu.golden.reorder import schedule_order
from opennpu.golden.isa import ActFn, AStep, Buf, Command, LutTable, Opcode, Precision
from opennpu.golden.program import Program

__all__ = ["Deferred", "Load", "TableLoad", "Activate", "Step", "Elementwise", "Emitter", "emit_steps",
           "row_pieces", "per_channel", "requant_params", "config_requant", "tile_quant"]


def per_channel(multiplier) -> bool:
    """A layer's requantization is per output channel (an array of multipliers), not per tensor."""
    return np.ndim(multiplier) == 1


def requant_params(multiplier, shift, n: int) -> tuple:
    """A layer's ``(multiplier, shift)`` as the compilers keep them: ints per tensor, or, if either is an
    array, both as N-element int64 arrays; ``ValueError`` if a value is out of the activation unit's range."""
    if np.ndim(multiplier) or np.ndim(shift):
        multiplier = np.broadcast_to(np.asarray(multiplier, np.int64), (n,)).copy()
        shift = np.broadcast_to(np.asarray(shift, np.int64), (n,)).copy()
    numerics.requantize(0, multiplier, shift)
    return multiplier, shift


def config_requant(multiplier, shift) -> tuple[int, int]:
    """CONFIG's multiplier and shift for a layer (unused, zero, when per-channel)."""
    return (0, 0) if per_channel(multiplier) else (int(multiplier), int(shift))


def tile_quant(multiplier, shift, n0: int, width: int, cols: int) -> tuple | None:
    """Per-channel ``(multipliers, shifts)`` of output columns ``n0 .. n0+width`` padded to ``cols`` lanes
    (``Activate.quant``), or None for a per-tensor layer."""
    if not per_channel(multiplier):
        return None
    mults, shifts = np.zeros(cols, np.int64), np.zeros(cols, np.int64)
    mults[:width], shifts[:width] = multiplier[n0:n0 + width], shift[n0:n0 + width]
    return mults, shifts


class Deferred:
    """A data-in payload known only when the program is assembled: ``words(source)`` returns the SRAM
    words (uint8, one row per word) from whatever ``source`` the caller passes to ``Emitter.program``."""

    def words(self, source) -> np.ndarray:
        raise NotImplementedError


@dataclass
class Load:
    """``LOAD buf addr rows`` with its payload: uint8 words (``rows`` x word bytes) or a ``Deferred``."""
    buf: Buf
    addr: int
    rows: int
    payload: object

    def piece(self, lo: int, rows: int) -> "Load":
        """Rows ``lo .. lo+rows`` of this load (numpy payloads only)."""
        return Load(self.buf, self.addr + lo, rows, self.payload[lo:lo + rows])


@dataclass
class Activate:
    """``LOAD_BIAS bank`` (unless ``bias`` is None: that bank already holds it), ``LOAD_QUANT bank`` when
    ``quant`` (per-channel ``(multipliers, shifts)``, one per column) is given, then ``ACTIVATE`` reading
    ``bank`` (``perchan``: with the bank's per-channel requantization). ``raw``: instead, ``STORE`` the
    accumulator rows to the host as int32 (no bias, no requantization: a layer whose output is the int32
    sum). ``tag`` is the caller's note for decoding what a ``dest=1`` activate (or a ``raw`` one) pushes
    to data-out."""
    accaddr: int
    aaddr: int
    rows: int
    dest: int
    bias: np.ndarray | None
    bank: int = 0
    tag: object = None
    quant: tuple | None = None
    perchan: bool = False
    raw: bool = False


@dataclass
class Step:
    """One weight tile through the array: loads, ``PRELOAD addr krows ncols``, ``COMPUTE`` of ``rows``
    rows from ``act_addr`` into ``acc_addr`` (or, with ``runs``, one ``COMPUTE`` per run: ``(act_addr,
    acc_addr offset, rows, astep)``, the runs together covering the ``rows`` accumulator rows; a depthwise
    run has a dict of its other COMPUTE fields in place of ``astep``: ``dw``, ``drow``, ``dcol``, and its
    ``rows`` are the stream's outputs, the padding columns' unwritten)."""
    group: object
    loads: list
    wgt_addr: int
    krows: int
    ncols: int
    act_addr: int
    acc_addr: int
    rows: int
    accumulate: bool
    activate: Activate | None = None
    runs: tuple = ()

    def computes(self) -> list:
        """The step's ``COMPUTE`` fields (but ``accumulate``), one dict per COMPUTE."""
        if not self.runs:
            return [dict(aaddr=self.act_addr, accaddr=self.acc_addr, rows=self.rows, astep=int(AStep.UNIT))]
        return [dict(aaddr=act, accaddr=self.acc_addr + offset, rows=rows,
                     **(mode if isinstance(mode, dict) else dict(astep=int(mode))))
                for act, offset, rows, mode in self.runs]


@dataclass
class TableLoad:
    """``LOAD_LUT table=EW`` with the elementwise tables ((2, 256) int32 values), carried by a step like a
    ``Load`` (it is not an activation load: ``buf`` None), so that it overlaps the COMPUTEs before the ADD
    that reads them."""
    tables: np.ndarray
    buf = None


@dataclass
class Elementwise:
    """An elementwise ``ACTIVATE`` (``ew``): ``rows`` rows from activation words ``xaddr ..`` and ``yaddr ..``
    through the tables that a ``TableLoad`` before it loaded, to activation words ``aaddr ..`` (``dest``
    0) or to data-out (``dest`` 1, noted as ``("activate", tag)``). A step of its own in ``emit_steps``:
    no weights, no ``COMPUTE``."""
    group: object
    xaddr: int
    yaddr: int
    aaddr: int
    rows: int
    dest: int
    tag: object = None
    loads: list = field(default_factory=list)
    activate = None


@dataclass
class Emitter:
    """Collects commands and their data-in payloads (padded to whole beats per SRAM word / register)."""
    config: NpuConfig
    #: programs of more commands are only ordered, not rescheduled (``golden.reorder.schedule_order``;
    #: None: ``golden.reorder.LIMIT``)
    schedule_limit: int | None = None
    commands: list = field(default_factory=list)
    chunks: list = field(default_factory=list)       # bytes or (Deferred, word width)
    _chunk_owners: list = field(default_factory=list, init=False, repr=False)   # each chunk's command index
    #: data-out events in push order: ("activate", tag) per ``dest=1`` activate, ("store", tag) per raw
    #: one (int32 accumulator rows), ("counters", tag)
    outputs: list = field(default_factory=list)
    #: (commands seen, ordered commands, each one's index in ``commands``)
    _ordered: tuple = field(default=(-1, [], []), init=False, repr=False)
    #: Commands are immutable: equal ones are built once (a tiled program repeats a few hundred distinct
    #: commands thousands of times); payload arrays passed again are padded once (id -> (array, bytes)).
    _interned: dict = field(default_factory=dict, init=False, repr=False)
    _padded: dict = field(default_factory=dict, init=False, repr=False)

    def cmd(self, op: Opcode, **fields):
        key = (op, *fields.items(), *map(type, fields.values()))   # (types too: Command refuses some)
        command = self._interned.get(key)
        if command is None:
            command = self._interned[key] = Command(op, **fields)
        self.commands.append(command)

    def _pad_words(self, words: np.ndarray) -> bytes:
        width = self.config.beats(words.shape[1]) * self.config.bus_bytes
        if width == words.shape[1]:
            return words.tobytes()
        padded = np.zeros((words.shape[0], width), np.uint8)
        padded[:, :words.shape[1]] = words
        return padded.tobytes()

    def words(self, words: np.ndarray):
        hit = self._padded.get(id(words))
        if hit is None or hit[0] is not words:
            hit = self._padded[id(words)] = (words, self._pad_words(np.asarray(words, np.uint8)))
        self._chunk(hit[1])

    def register(self, payload: bytes):
        self._chunk(payload + bytes(self.config.beats(len(payload)) * self.config.bus_bytes - len(payload)))

    def _chunk(self, chunk):
        """The data-in of the last command."""
        self.chunks.append(chunk)
        self._chunk_owners.append(len(self.commands) - 1)

    def configure(self, *, multiplier: int, shift: int, out_zp: int, qmin: int, qmax: int, lut=None,
                  precision: Precision = Precision.INT8, single_round: bool = False, **image):
        """``CONFIG`` with these requantization parameters (LUT activation when ``lut`` is given: 256 int8
        entries), then ``LOAD_LUT``; ``image``: the depthwise COMPUTE's image fields (``dw_width`` ...)."""
        self.cmd(Opcode.CONFIG, precision=precision, act=ActFn.LUT if lut is not None else ActFn.CLAMP,
                 out_zp=out_zp, qmin=qmin, qmax=qmax, shift=shift, multiplier=multiplier,
                 single_round=single_round, **image)
        if lut is not None:
            self.cmd(Opcode.LOAD_LUT)
            self.register(np.asarray(lut, np.int8).tobytes())

    def load(self, load: Load | TableLoad):
        if isinstance(load, TableLoad):
            self.ew_tables(load.tables)
            return
        self.cmd(Opcode.LOAD, buf=load.buf, addr=load.addr, rows=load.rows)
        if isinstance(load.payload, Deferred):
            self._chunk(load.payload)
        else:
            self.words(load.payload)

    def activate(self, act: Activate):
        if act.raw:
            self.cmd(Opcode.STORE, buf=Buf.ACC, addr=act.accaddr, rows=act.rows)
            self.outputs.append(("store", act.tag))
            return
        self.activate_params(act)
        self.cmd(Opcode.ACTIVATE, accaddr=act.accaddr, aaddr=act.aaddr, rows=act.rows, dest=act.dest,
                 bank=act.bank, perchan=act.perchan)
        if act.dest == 1:
            self.outputs.append(("activate", act.tag))

    def activate_params(self, act: Activate) -> Activate:
        """The ``LOAD_BIAS`` / ``LOAD_QUANT`` of ``act``; returns ``act`` without them (to activate later)."""
        if act.raw:
            return act
        if act.bias is not None:
            self.cmd(Opcode.LOAD_BIAS, bank=act.bank)
            self.register(np.asarray(act.bias, np.int64).astype("<i4").tobytes())
        if act.quant is not None:
            multipliers, shifts = act.quant
            self.cmd(Opcode.LOAD_QUANT, bank=act.bank)
            self.register(np.asarray(multipliers, np.int64).astype("<i4").tobytes()
                          + np.asarray(shifts, np.int64).astype(np.int8).tobytes())
        return replace(act, bias=None, quant=None)

    def elementwise(self, ew: Elementwise):
        self.cmd(Opcode.ACTIVATE, ew=1, xaddr=ew.xaddr, yaddr=ew.yaddr, aaddr=ew.aaddr, rows=ew.rows, dest=ew.dest)
        if ew.dest == 1:
            self.outputs.append(("activate", ew.tag))

    def ew_tables(self, tables: np.ndarray):
        """``LOAD_LUT table=EW``: the elementwise tables, (2, 256) int32 values."""
        self.cmd(Opcode.LOAD_LUT, table=LutTable.EW)
        self.register(np.asarray(tables, np.int64).astype("<i4").tobytes())

    def counters(self, tag):
        self.cmd(Opcode.COUNTERS)
        self.outputs.append(("counters", tag))

    def ordered(self) -> list:
        """The commands, merged in the order that dispatches each soonest, with the ``wait`` tokens that
        order them (``golden.reorder.schedule_order``)."""
        return self._schedule()[0]

    def _schedule(self) -> tuple:
        if self._ordered[0] != len(self.commands):
            limit = reorder.LIMIT if self.schedule_limit is None else self.schedule_limit
            self._ordered = (len(self.commands), *schedule_order(self.commands, self.config, limit))
        return self._ordered[1:]

    def program(self, source=None) -> Program:
        """The ordered commands and their data-in stream (each command's chunk moved with it);
        ``Deferred`` payloads come from ``source``."""
        commands, order = self._schedule()
        chunk_of = dict(zip(self._chunk_owners, self.chunks))
        data = b"".join(self._pad_words(chunk.words(source)) if isinstance(chunk, Deferred) else chunk
                        for chunk in (chunk_of[i] for i in order if i in chunk_of))
        return Program(list(commands), data)


def row_pieces(rows: int, count: int) -> list:
    """``rows`` cut into ``count`` balanced pieces: [(first row, rows)]."""
    bounds = [rows * i // count for i in range(count + 1)]
    return [(lo, hi - lo) for lo, hi in zip(bounds, bounds[1:])]


def emit_steps(e: Emitter, steps: list, preamble: Callable[[object], None],
               between: Callable[[object], None] | None = None):
    """Emit ``steps`` in pipelined order (an ``Elementwise`` step is its ``ACTIVATE``, with the loads it
    carries). ``preamble(group)`` runs before the first step of each group;
    ``between(group)`` (optional) runs after each group's last ``ACTIVATE`` is emitted, at a point where
    the next command is a barrier anyway (used for ``COUNTERS`` snapshots).

    The commands are ordered so that ``order_program`` can let them stream (``Wait.STREAM``) where the
    pipeline starts and ends:

    * the first two steps' activation loads follow their ``PRELOAD`` (the first ``COMPUTE`` then reads
      its rows as they arrive instead of after the whole tile), and the second step's other loads (its
      weights) follow the first ``PRELOAD``, ahead of the first activation load, so the second
      ``PRELOAD`` is ready when the first ``COMPUTE`` ends;
    * a tile's ``ACTIVATE`` follows its own last ``COMPUTE`` (reading each accumulator row as it
      drains) where the step before wrote no tile back; else it follows the next step's ``PRELOAD``
      (the ACT unit would still be busy with that one, and an ``ACTIVATE`` waiting for it must not hold
      back that ``PRELOAD``); the last tile's ``LOAD_BIAS`` (and ``LOAD_QUANT``) go ahead of its step's
      loads, so that it waits for no LOAD behind them."""
    if not steps:
        raise ValueError("nothing to emit: no steps")
    streamed = [[load for load in step.loads if load.buf == Buf.ACT] for step in steps[:2]]
    hoisted = ([load for load in steps[1].loads if load.buf != Buf.ACT]
               if len(steps) > 1 and steps[1].group == steps[0].group else [])
    early = {id(load) for loads in streamed for load in loads} | {id(load) for load in hoisted}
    activates = [step.activate for step in steps]

    preamble(steps[0].group)
    for load in steps[0].loads:
        if id(load) not in early:
            e.load(load)
    late, before = None, None
    for s, step in enumerate(steps):
        elementwise = isinstance(step, Elementwise)
        if not elementwise:
            e.cmd(Opcode.PRELOAD, addr=step.wgt_addr, krows=step.krows, ncols=step.ncols)
        if s == 0:
            for load in hoisted:
                e.load(load)
        if late is not None:         # (behind the PRELOAD: an ACTIVATE waiting for the ACT unit holds the head)
            e.activate(late)
            late = None
        for load in (streamed[s] if s < 2 else ()):
            e.load(load)
        if elementwise:
            e.elementwise(step)
        else:
            for fields in step.computes():
                e.cmd(Opcode.COMPUTE, accumulate=step.accumulate, **fields)
        nxt = steps[s + 1] if s + 1 < len(steps) else None
        same = nxt is not None and nxt.group == step.group
        if activates[s] is not None:
            if before is None or not same:
                e.activate(activates[s])     # (streams behind its COMPUTE)
            else:
                late = activates[s]          # (behind the next step's PRELOAD)
        before = step.activate
        if nxt is not None:
            if s + 2 == len(steps) and activates[-1] is not None:    # (the last write-back's parameters)
                activates[-1] = e.activate_params(activates[-1])
            for load in nxt.loads:
                if id(load) not in early:
                    e.load(load)
        if not same:
            if between is not None:
                between(step.group)
            if nxt is not None:
                preamble(nxt.group)
