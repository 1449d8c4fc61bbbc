"""The cycle model: when each command dispatches and finishes, exactly as the RTL does it.

Microarchitecture (the contract ``hdl/dispatcher.py`` and the units implement)
------------------------------------------------------------------------------
A dispatcher holds one command (the *head*). Five units each execute one command at a time:

====== ===================================== ==============================================
unit   commands                              busy after dispatch in cycle ``d``
====== ===================================== ==============================================
LD     LOAD, LOAD_BIAS, LOAD_LUT,            one data-in beat per cycle, d+1 .. d+B; free at d+B
       LOAD_QUANT                            (the next one's first beat in d+B+1); done at d+B+1
PL     PRELOAD (every PE row: ``R`` =        PE row j stepped in d+1+j (its word read), its array
       rows; the tile's, then zeros)         write presented in d+2+j, skewed: PE(j, c) written
                                             at the edge ending d+2+j+c; free at d+R (the next
                                             PRELOAD steps right behind); done at d+R+cols+1
EX     COMPUTE (``M`` rows)                  act rows read d+1 .. d+M (= e). The command then
                                             drains: EX takes a new COMPUTE in e itself (its first
                                             row is read in e+1, right behind our last one); the
                                             command is done after e+L+1 where L = array latency
                                             + 1 (last accumulator write at e+array_latency+1).
                                             Several COMPUTEs may drain at once; each is done L+1
                                             cycles after its move, so in order.
       output-stationary COMPUTE (``S``      e = d + max(S, cols-1); it moves to the single drain
       steps, ``R`` output rows)             slot in m = max(e, drain slot free); EX takes a new
                                             COMPUTE from m+1; the drain slot writes output row i
                                             in m+cols+3+i and holds it until m+cols+R+2
ACT    ACTIVATE (``M`` rows)                 acc rows read d+1 .. d+M; row j written/pushed in
                                             cycle d+2+j+P (P = activation unit latency); done
                                             at d+M+P+2; the next ACTIVATE may dispatch from
                                             d+M+1, whatever its bias bank and ``perchan`` (each
                                             row's parameters travel beside it through the
                                             activation unit). Elementwise (``ew``): words
                                             read d+1+2j (x) and d+2+2j (y), table reads
                                             in the next cycles, row j presented in d+4+2j,
                                             written/pushed in d+4+2j+P; done at d+2M+P+3;
                                             the next ACTIVATE from d+2M+1
ST     STORE (``n`` words of ``b`` beats),   SRAM read of word j in d+1+j*b; beats pushed
       COUNTERS (``B`` beats)                d+2 .. d+1+n*b (COUNTERS: n*b = B); free at d+n*b+2
====== ===================================== ==============================================

The head dispatches in cycle ``d`` (the next command is in the head from ``d+1``) when

- it is malformed or fails a range check: it is rejected at once (no wait, nothing executes);
- CONFIG, FENCE, COUNTERS: every unit is free;
- otherwise: its unit is free and every unit its ``wait`` tokens name (``golden/isa.py`` ``Wait``) has
  finished its earlier commands: the release cycle of that unit's last command (``Wait.EX_OLDER``: of
  the COMPUTE before the last). No addresses are compared: the compiler orders conflicting commands
  with the tokens (``golden/deps.py``);
- PE weights need no token in program order: a COMPUTE dispatched after a PRELOAD (in ``c > p``) presents
  its first row in c+2 and so sees the new tile in every PE (``hdl/array.py``: a row presented in ``s``
  sees PE row j's write presented in ``t`` iff ``s + j > t``; here t = p+2+j); and a PRELOAD dispatched
  after a COMPUTE that is not the last one (EX took a later one, so this one had presented its last row
  in ``e + 1`` <= ``p``) overwrites its buffer behind its last row (``golden/deps.py``);
- with ``Wait.STREAM`` (PRELOAD, COMPUTE, ACTIVATE): also once the last command of its unit's
  ``STREAM_SOURCE`` started ``stream_delay`` cycles ago: a PRELOAD or COMPUTE reads word j of a LOAD in
  d+1+j at the earliest, after the LOAD, dispatched before it, wrote it (d_load+1+j, one beat a word), so
  it needs no extra cycle; an ACTIVATE reads accumulator row j in d+1+j, which the COMPUTE that started
  in c writes in c+2+j+L (L = array latency), so it dispatches from c+L+2.

All stream back-pressure freezes the whole machine (see ``hdl/top.py``), so this timeline is the RTL's
timeline with the stall cycles removed: ``cycles - stall_cycles`` equals the model's ``cycles``.

``cycles`` runs from the cycle the first command sits in the head to the cycle the last data-out
word leaves the output register, whichever of (last dispatch, last unit busy, last output) is later.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from .isa import Wait

__all__ = ["Unit", "Space", "Access", "array_latency", "ACT_LATENCY", "conflict", "WAIT_OF_UNIT", "STREAM_SOURCE",
           "stream_delay", "CycleModel"]

#: Fused activation unit pipeline depth (cycles from accumulator data to result), see hdl/activation.py:
#: bias, shift, three multiply stages, rounding shift, zero point, clamp, LUT read, select.
ACT_LATENCY = 10


def array_latency(rows: int, cols: int) -> int:
    """Cycles from an activation row entering the array to its de-skewed result, see hdl/array.py:
    the skew (``rows - 1``) and the row's walk to the last column (``cols - 1``), plus the 3-stage
    PE pipeline (operands, DSP product, sum)."""
    return rows + cols + 1


class Unit(enum.IntEnum):
    LD = 0
    PL = 1
    EX = 2
    ACT = 3
    ST = 4


class Space(enum.IntEnum):
    ACT = 0
    WGT = 1
    ACC = 2
    BIAS = 3
    LUT = 4
    PEW = 5
    OUT = 6


@dataclass(frozen=True)
class Access:
    space: Space
    lo: int
    count: int
    write: bool

    @property
    def hi(self) -> int:
        return self.lo + self.count


def conflict(x: Access, y: Access) -> bool:
    return x.space == y.space and (x.write or y.write) and x.lo < y.hi and y.lo < x.hi


#: The wait token that waits for a unit's earlier commands.
WAIT_OF_UNIT = {Unit.LD: Wait.LD, Unit.PL: Wait.PL, Unit.EX: Wait.EX, Unit.ACT: Wait.ACT, Unit.ST: Wait.ST}


#: ``Wait.STREAM``: the unit whose last command a command of this unit may follow while it still writes.
STREAM_SOURCE = {Unit.PL: Unit.LD, Unit.EX: Unit.LD, Unit.ACT: Unit.EX}


def stream_delay(rows: int, cols: int) -> dict:
    """Per ``STREAM_SOURCE`` unit, the cycles from its last command's dispatch to the first cycle a
    ``Wait.STREAM`` command may dispatch behind it (see the module docstring)."""
    return {Unit.LD: 1, Unit.EX: array_latency(rows, cols) + 2}


_WAIT_BITS = tuple((u, int(token)) for u, token in WAIT_OF_UNIT.items())     # (plain ints: fast)
_EX_OLDER = int(Wait.EX_OLDER)
_STREAM = int(Wait.STREAM)


class CycleModel:
    """Event-driven replica of the dispatcher and units. Feed commands in program order."""

    def __init__(self, rows: int, cols: int, dataflow: str = "ws"):
        self.rows, self.cols = rows, cols
        self.drain_cycles = array_latency(rows, cols) + 1 if dataflow == "ws" else None
        self.head = 0                      # cycle in which the next command sits in the head
        self.free = {u: 0 for u in Unit}   # first cycle each unit can accept a dispatch
        self.release = {u: 0 for u in Unit}   # cycle the last command of each unit is done
        self.ex_older_release = 0          # ... and of the COMPUTE before the last one
        self.last_dispatch = -1
        self.last_push = -2                # cycle of the last push into the output register
        self.max_release = 0
        delays = stream_delay(rows, cols)
        self.stream = {u: (source, delays[source]) for u, source in STREAM_SOURCE.items()}
        self.last_start = {source: -delay for source, delay in delays.items()}   # of the last command

    def _all_free(self) -> int:
        return max([self.max_release, *self.free.values()])

    def _retire(self, d: int):
        self.last_dispatch = d
        self.head = d + 1

    def reject(self) -> int:
        d = self.head
        self._retire(d)
        return d

    def barrier(self) -> int:
        """CONFIG / FENCE / COUNTERS: dispatch once every unit is idle."""
        d = max(self.head, self._all_free())
        self._retire(d)
        return d

    def _dispatch_cycle(self, unit: Unit, waits: int) -> int:
        d = max(self.head, self.free[unit])
        if waits:
            for u, token in _WAIT_BITS:
                if waits & token:
                    d = max(d, self.release[u])
            if waits & _EX_OLDER:
                d = max(d, self.ex_older_release)
            if waits & _STREAM and unit in self.stream:
                source, delay = self.stream[unit]
                d = max(d, self.last_start[source] + delay)
        return d

    def earliest(self, unit: Unit | None, waits: int) -> int:
        """The cycle a command of ``unit`` (None: a barrier) with ``waits`` would dispatch in now, without
        dispatching it."""
        if unit is None:
            return max(self.head, self._all_free())
        return self._dispatch_cycle(unit, waits)

    def _record(self, unit, d, free, release):
        self._retire(d)
        self.free[unit] = free
        if unit in self.last_start:
            self.last_start[unit] = d
        if unit == Unit.EX:
            self.ex_older_release = self.release[unit]
        self.release[unit] = release
        self.max_release = max(self.max_release, release)

    def load(self, waits: int, beats: int) -> int:
        d = self._dispatch_cycle(Unit.LD, waits)
        self._record(Unit.LD, d, d + beats, d + beats + 1)
        return d

    def preload(self, waits: int) -> int:
        d = self._dispatch_cycle(Unit.PL, waits)
        self._record(Unit.PL, d, d + self.rows, d + self.rows + self.cols + 1)
        return d

    def compute(self, waits: int, rows: int) -> int:
        d = self._dispatch_cycle(Unit.EX, waits)
        move = d + rows                                  # (no wait: COMPUTEs drain side by side)
        release = move + self.drain_cycles + 1
        self._record(Unit.EX, d, move, release)         # (the next COMPUTE may dispatch in ``move``)
        return d

    def compute_os(self, waits: int, steps: int, mrows: int) -> int:
        """Output-stationary COMPUTE (``hdl/os_execute_unit.py``): the issue phase lasts
        ``P = max(steps, cols - 1)`` cycles (idle ones first, so a tile's results are drained before
        the next tile overwrites them), then the command waits for the single drain slot (a WS
        COMPUTE waits for none);
        output row i is written in cycle m+cols+3+i, the slot frees after the last one."""
        d = self._dispatch_cycle(Unit.EX, waits)
        move = max(d + max(steps, self.cols - 1), self.release[Unit.EX])
        release = move + self.cols + mrows + 3
        self._record(Unit.EX, d, move + 1, release)
        return d

    def activate(self, waits: int, rows: int, to_output: bool, elementwise: bool = False) -> int:
        d = self._dispatch_cycle(Unit.ACT, waits)
        reads, tail = (2 * rows, ACT_LATENCY + 3) if elementwise else (rows, ACT_LATENCY + 2)
        self._record(Unit.ACT, d, d + reads + 1, d + reads + tail)
        if to_output:
            self.last_push = max(self.last_push, d + reads + tail - 1)
        return d

    def store(self, waits: int, beats: int) -> int:
        d = self._dispatch_cycle(Unit.ST, waits)
        self._record(Unit.ST, d, d + beats + 2, d + beats + 2)
        self.last_push = max(self.last_push, d + beats + 1)
        return d

    def counters_snapshot(self, beats: int) -> int:
        d = max(self.head, self._all_free())
        self._record(Unit.ST, d, d + beats + 2, d + beats + 2)
        self.last_push = max(self.last_push, d + beats + 1)
        return d

    def total_cycles(self) -> int:
        return max(self.last_dispatch + 1, self._all_free(), self.last_push + 2)
