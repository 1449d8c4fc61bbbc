"""A list scheduler: the order of a program's commands that lets the in-order dispatcher start each as
early as the cycle model allows, with the ``wait`` tokens that order it (``golden/deps.py``).

The dispatcher holds one command at a time, so a command that must wait (an ACTIVATE for its rows to
drain, a PRELOAD for the weights it reads) holds back everything behind it. A compiler emits commands in
an order that reads well (a step's loads, PRELOAD, COMPUTE, then the write-back); ``schedule_program``
merges them again, greedily: of the next command of each queue, it emits the one the cycle model
(``golden.timing.CycleModel``) would dispatch first (the program's order breaks ties). The queues keep
their own order: LOAD, the other LD commands (LOAD_BIAS, LOAD_QUANT, LOAD_LUT: a bias bank's LOAD_BIAS
may have to wait for the ACTIVATE that last read the bank, and should not hold back the LOADs behind
it; each command's data-in moves with it), PL and EX together (a COMPUTE uses the PE buffer of the
PRELOADs before it), ACT, ST; CONFIG, FENCE and COUNTERS stay where they are (everything before is
emitted first). A command never passes an earlier one it conflicts with (``golden.timing.conflict``:
so the result computes the same, and pushes data-out in the same order), nor more than ``WINDOW`` of
another queue's.

It models the program's timing command by command, so it costs a few times ``order_program``: programs
of more than ``LIMIT`` commands are only ordered (``order_program``); the long loops of big GEMMs keep
their units busy in the compiler's order anyway.
"""
from __future__ import annotations

from opennpu.config import NpuConfig

from .checks import data_in_bytes
from .deps import BARRIERS, UNIT_OF, DependencyTracker, first_conflict, walk, order_program
from .isa import Command, Opcode
from .model import advance
from .program import Program
from .timing import CycleModel, Unit

__all__ = ["WINDOW", "LIMIT", "schedule_program", "schedule_order"]

#: How many commands of another queue a command may pass.
WINDOW = 64
#: Programs longer than this are ordered in place (``order_program``), not rescheduled (512^3 on 16x16,
#: 25,593 commands: rescheduling gains 42 of 524,412 cycles for 1 s of compile time).
LIMIT = 16384

_QUEUES = 5


def _queue(op: Opcode) -> int:
    unit = UNIT_OF[op]
    if unit == Unit.LD:
        return 0 if op == Opcode.LOAD else 4
    return {Unit.PL: 1, Unit.EX: 1, Unit.ACT: 2, Unit.ST: 3}[unit]


def schedule_program(program: Program, config: NpuConfig) -> Program:
    """``program``'s commands in the order described in the module docstring, each with the fewest
    tokens that order it (tokens already set are kept), each command's data-in moved with it. Programs
    with raw-int or rejected commands, or more than ``LIMIT`` commands, are only ordered
    (``order_program``)."""
    commands, order = schedule_order(program.commands, config)
    offsets = [0]
    for command in program.commands:
        offsets.append(offsets[-1] + data_in_bytes(command, config))
    data_in = b"".join(program.data_in[offsets[i]:offsets[i + 1]] for i in order)
    return Program(commands, data_in + program.data_in[offsets[-1]:])


def schedule_order(commands: list, config: NpuConfig, limit: int = LIMIT) -> tuple[list, list]:
    """``(commands, order)``: ``schedule_program``'s commands and, for each, its index in ``commands``
    (where the caller keeps the data-in of each); programs of more than ``limit`` commands are only
    ordered."""
    program = Program(list(commands))
    items = (list(walk(program, config)) if len(commands) <= limit and all(isinstance(c, Command) for c in commands)
             else None)
    if items is None or any(cmd is None for _, cmd, _ in items):
        return order_program(program, config).commands, list(range(len(commands)))
    tracker, model, out, order = DependencyTracker(config), CycleModel(config.rows, config.cols, config.dataflow), [], []

    def emit(index, cmd, spans, needed=None):
        order.append(index)
        if needed is None:
            needed = 0 if cmd.op in BARRIERS else tracker.needed_spans(cmd, spans)
        if needed & ~cmd.wait:
            cmd = cmd.with_wait(cmd.wait | needed)
        tracker.dispatch_spans(len(out), cmd, spans)
        advance(model, cmd, config)
        out.append(cmd)

    segment = []
    for item in items + [None]:
        if item is not None and item[1].op not in BARRIERS:
            segment.append(item)
            continue
        _merge(segment, emit, tracker, model)
        segment = []
        if item is not None:
            emit(*item)
    return out, order


def _merge(segment: list, emit, tracker: DependencyTracker, model: CycleModel):
    """Emit the items ``(index, cmd, spans)`` of a barrier-free stretch, greedily (module docstring)."""
    queues = [[] for _ in range(_QUEUES)]
    for item in segment:
        queues[_queue(item[1].op)].append(item)
    pos = [0] * _QUEUES
    for _ in range(len(segment)):
        best, best_key = None, None
        for q, queue in enumerate(queues):
            if pos[q] == len(queue):
                continue
            index, cmd, spans = queue[pos[q]]
            if _blocked(index, spans, q, queues, pos):
                continue
            needed = tracker.needed_spans(cmd, spans)
            key = (model.earliest(UNIT_OF[cmd.op], cmd.wait | needed), index)
            if best_key is None or key < best_key:
                best, best_key = (q, needed), key
        q, needed = best
        pos[q] += 1
        emit(*queues[q][pos[q] - 1], needed)         # (the tokens just computed: the tracker has not moved since)


def _blocked(index: int, spans, q: int, queues: list, pos: list) -> bool:
    """Whether the command at ``index`` must wait for an earlier one of another queue (it conflicts with
    it, or it would pass more than ``WINDOW``)."""
    for r, queue in enumerate(queues):
        if r == q:
            continue
        for j in range(pos[r], len(queue)):
            other = queue[j]
            if other[0] > index:
                break
            if j - pos[r] >= WINDOW or first_conflict(spans, other[2]) is not None:
                return True
    return False
