"""Dependencies between commands, resolved by the compiler: what each command accesses, which unit runs
it, and the ``wait`` tokens (``golden/isa.py`` ``Wait``) that order conflicting commands.

The hardware dispatches in program order, one command at a time, and compares no addresses. When
command ``k`` dispatches, the only earlier commands that can still run are

- the last command of each of LD, PL and ST (a unit takes a command only once the one before it is
  done);
- of the ACTIVATEs, every one that the ACTIVATEs after it, all but the last, have not yet covered with
  ``ACT_LATENCY + 2`` cycles (their rows plus one each: ACT takes the next ACTIVATE a cycle after the
  rows of the one before are read, and a row leaves the activation unit ``ACT_LATENCY + 1`` cycles
  after its read, an elementwise row ``ACT_LATENCY + 2``; its two reads take two cycles, counted as one);
- of the COMPUTEs: weight-stationary, every one that the COMPUTEs after it, all but the last, have not
  yet covered with ``array_latency + 2`` rows (EX takes a COMPUTE as soon as the one before it has issued
  its rows, one a cycle, and a COMPUTE drains ``array_latency + 1`` cycles after its last row; so short
  COMPUTEs drain side by side); output-stationary, the last two (EX takes a COMPUTE while the one before
  it drains, in the single drain slot);
- and of those only the ones no command up to ``k`` has waited for (a token of ``k``, or of a command
  between, guarantees that they were done when that command dispatched; CONFIG, FENCE and COUNTERS
  wait for everything).

An ACTIVATE reads its accumulator rows (elementwise: its activation words) and its bias bank (bias and
requantization parameters) as it reads each row, and each row's parameters travel with it through the
activation unit; ACT takes the next ACTIVATE only once every row is read. So those reads of the
ACTIVATEs before are over when the next ACTIVATE dispatches (a LOAD_BIAS into the bank of the one before
the last needs no token), while their LUT reads and result writes may still be in flight. An
elementwise ACTIVATE that reads words an ACTIVATE before it writes is the one hazard inside a unit: it
needs ``Wait.ACT``.

PE weight buffers (``Space.PEW``) are ordered by dispatch order alone, weight-stationary (the PRELOAD
writes follow the rows' wavefront, ``golden/timing.py``): a COMPUTE never waits for a PRELOAD before it,
and a PRELOAD waits only for the last COMPUTE, while it is the last one, if it reads the buffer the
PRELOAD fills (a later COMPUTE's dispatch shows that the earlier ones have presented their rows).

Two commands *conflict* when they access the same space with overlapping ranges and at least one
writes (``golden.timing.conflict``). A program is *ordered* when no command conflicts with such a
possibly-running command of another unit (a unit runs its own commands in order), except where it
*streams* (``Wait.STREAM``, weight-stationary only): a PRELOAD behind the last LOAD of weights, a COMPUTE
behind the last LOAD of activations, an ACTIVATE behind the last COMPUTE, when every conflict between
the two is the later one reading what the earlier one writes, at most one word a cycle (a COMPUTE
reading every other word, ``AStep.DOUBLE``, never streams, nor an ACTIVATE behind a depthwise
COMPUTE), from an address no
higher than the first one written (so it stays behind the writer: ``golden.timing.STREAM_SOURCE``; a
LOAD writes a word a cycle, since ``NpuConfig`` makes a data-in beat hold an SRAM word). This holds for any timing, so the check needs no cycle model.
``order_program`` sets the fewest tokens that order a program, STREAM where it can;
``check_program`` refuses an unordered one with a ``HazardError`` naming both commands, and one whose
elementwise ACTIVATE overlaps its own input other than in place with an ``OverlapError``.
"""
from __future__ import annotations

from opennpu.config import NpuConfig

from .checks import act_span, dw_stream_words, stream_weight_words, validate, weight_words
from .isa import AStep, Command, Opcode, Precision, Wait, encode
from .program import Program
from .timing import ACT_LATENCY, STREAM_SOURCE, WAIT_OF_UNIT, Access, Space, Unit, array_latency

__all__ = ["UNIT_OF", "BARRIERS", "HazardError", "OverlapError", "check_in_place", "accesses", "checked", "streams",
           "walk", "first_conflict", "DependencyTracker", "order_program", "check_program"]

#: The unit that executes each opcode (CONFIG and FENCE occupy none).
UNIT_OF = {Opcode.LOAD: Unit.LD, Opcode.LOAD_BIAS: Unit.LD, Opcode.LOAD_LUT: Unit.LD, Opcode.LOAD_QUANT: Unit.LD,
           Opcode.PRELOAD: Unit.PL, Opcode.COMPUTE: Unit.EX, Opcode.ACTIVATE: Unit.ACT,
           Opcode.STORE: Unit.ST, Opcode.COUNTERS: Unit.ST}
#: Opcodes that dispatch only when every unit is idle.
BARRIERS = (Opcode.CONFIG, Opcode.FENCE, Opcode.COUNTERS)


class OverlapError(ValueError):
    """An elementwise ACTIVATE whose output words overlap its input words other than exactly in place:
    a row would read a word that an earlier row of the same command wrote (no token orders a command with
    itself)."""


def check_in_place(index: int, cmd: Command):
    """Raise ``OverlapError`` if elementwise ACTIVATE ``cmd`` (program entry ``index``) writes activation
    words that overlap its ``xaddr`` or ``yaddr`` words without coinciding with them."""
    if not cmd.ew or cmd.dest:
        return
    lo, hi = cmd.aaddr, cmd.aaddr + cmd.rows
    for name in ("xaddr", "yaddr"):
        src = getattr(cmd, name)
        if src != lo and src < hi and lo < src + cmd.rows:
            raise OverlapError(f"command {index} {cmd!r} writes activation words [{lo}:{hi}] that overlap its "
                               f"{name} words [{src}:{src + cmd.rows}] other than in place: a row would read a word "
                               f"an earlier row of the same command wrote")


class HazardError(ValueError):
    """Two conflicting commands of different units that no ``wait`` token orders."""

    def __init__(self, later: tuple, earlier: tuple, access: Access, token: int):
        (k, cmd_k), (j, cmd_j) = later, earlier
        self.later, self.earlier = later, earlier
        super().__init__(f"unordered hazard: command {k} {cmd_k!r} and command {j} {cmd_j!r} both access "
                         f"{access.space.name}[{access.lo}:{access.hi}] (one writes) and no wait orders "
                         f"them; command {k} needs wait={Wait(token)!r} (golden.deps.order_program sets it)")


_SPACE_OF_BUF = (Space.ACT, Space.WGT, Space.ACC)
_OUT = Access(Space.OUT, 0, 1, True)


def accesses(cmd: Command, config: NpuConfig, precision: Precision, cur: int) -> tuple:
    """What an accepted command reads and writes (``cur``: the PE weight buffer COMPUTE uses; PRELOAD
    fills the other one). The one table the golden model, the cycle model and the ordering share."""
    op = cmd.op
    if op == Opcode.LOAD:
        return (Access(_SPACE_OF_BUF[cmd.buf], cmd.addr, cmd.rows, True),)
    if op in (Opcode.LOAD_BIAS, Opcode.LOAD_QUANT):      # (a bias bank holds both)
        return (Access(Space.BIAS, cmd.bank, 1, True),)
    if op == Opcode.LOAD_LUT:                            # (LUT 0: the activation LUT, 1: the ew tables)
        return (Access(Space.LUT, cmd.table, 1, True),)
    if op == Opcode.PRELOAD:
        return (Access(Space.WGT, cmd.addr, weight_words(precision, cmd.krows), False),
                Access(Space.PEW, 1 - cur, 1, True))
    if op == Opcode.COMPUTE and config.dataflow == "os":
        return (Access(Space.ACT, cmd.aaddr, cmd.rows, False),
                Access(Space.WGT, cmd.waddr, stream_weight_words(precision, cmd.rows), False),
                Access(Space.ACC, cmd.accaddr, cmd.mrows, True))
    if op == Opcode.COMPUTE and cmd.dw:      # (the words it may read: which ones depends on CONFIG)
        return (Access(Space.ACT, cmd.aaddr, dw_stream_words(config, cmd.rows), False),
                Access(Space.ACC, cmd.accaddr, cmd.rows, True), Access(Space.PEW, cur, 1, False))
    if op == Opcode.COMPUTE:
        return (Access(Space.ACT, cmd.aaddr, act_span(cmd.astep, cmd.rows), False),
                Access(Space.ACC, cmd.accaddr, cmd.rows, True), Access(Space.PEW, cur, 1, False))
    if op == Opcode.ACTIVATE:
        target = _OUT if cmd.dest else Access(Space.ACT, cmd.aaddr, cmd.rows, True)
        if cmd.ew:
            sources = (Access(Space.ACT, cmd.xaddr, cmd.rows, False), Access(Space.ACT, cmd.yaddr, cmd.rows, False),
                       Access(Space.LUT, 1, 1, False))
        else:
            sources = (Access(Space.ACC, cmd.accaddr, cmd.rows, False),)
        return sources + (Access(Space.BIAS, cmd.bank, 1, False), Access(Space.LUT, 0, 1, False), target)
    if op == Opcode.STORE:
        return (Access(_SPACE_OF_BUF[cmd.buf], cmd.addr, cmd.rows, False), _OUT)
    if op == Opcode.COUNTERS:
        return (_OUT,)
    return ()


_TOKENS = tuple((int(u), int(token)) for u, token in WAIT_OF_UNIT.items())
_EX_OLDER = int(Wait.EX_OLDER)
_STREAM = int(Wait.STREAM)
_EX = int(Unit.EX)
_ACT = int(Unit.ACT)
_PEW = int(Space.PEW)
_ROW_READS = (int(Space.ACC), int(Space.BIAS))
_ACT_SPACE = int(Space.ACT)
_BARRIER_OPS = frozenset(BARRIERS)
_UNIT = {op: int(unit) for op, unit in UNIT_OF.items()}
_STREAM_SOURCE = {int(u): int(source) for u, source in STREAM_SOURCE.items()}


#: ``Wait.STREAM``: per opcode, the space it reads behind the writer and the writer's opcode.
_STREAMED = {Opcode.PRELOAD: (int(Space.WGT), Opcode.LOAD), Opcode.COMPUTE: (int(Space.ACT), Opcode.LOAD),
             Opcode.ACTIVATE: (int(Space.ACC), Opcode.COMPUTE)}


def streams(cmd: Command, spans, entry: tuple, config: NpuConfig) -> bool:
    """Whether ``cmd`` with access ``spans`` may follow ``entry`` (``(index, cmd, spans)``, the last
    command of its ``STREAM_SOURCE`` unit) with ``Wait.STREAM`` instead of waiting for it: every
    conflict between them is ``cmd`` reading the streamed space from an address no higher than the first
    one ``entry`` writes there, no faster than a word a cycle (the module docstring; a COMPUTE reading
    every other word, ``AStep.DOUBLE``, would overtake the LOAD; a depthwise COMPUTE writes its first
    accumulator row only behind its FIR's ``rows - 1`` words, so an ACTIVATE does not stream behind it)."""
    op = cmd.op
    rule = _STREAMED.get(op)
    if rule is None or config.dataflow != "ws" or entry[1].op != rule[1] or \
            (op == Opcode.COMPUTE and cmd.astep == AStep.DOUBLE) or (op == Opcode.ACTIVATE and entry[1].dw):
        return False
    space = rule[0]
    for space2, lo2, hi2, write2, _ in entry[2]:
        for sp, lo, hi, write, _ in spans:
            if sp == space2 and (write or write2) and lo < hi2 and lo2 < hi:
                if not (sp == space and write2 and not write and lo <= lo2):
                    return False
    return True


def _spans(accs) -> tuple:
    """Accesses as ``(space, lo, hi, write, access)`` tuples: what the conflict test compares (fast)."""
    return tuple((int(a.space), a.lo, a.lo + a.count, a.write, a) for a in accs)


def _without_pew(spans) -> tuple:
    return tuple(span for span in spans if span[0] != _PEW)


def _without_row_reads(spans) -> tuple:
    """An ACTIVATE's accesses once a later ACTIVATE has dispatched: its accumulator, activation-word and
    bias reads are over (the module docstring)."""
    return tuple(span for span in spans if span[0] not in _ROW_READS and not (span[0] == _ACT_SPACE and not span[3]))


def _reads_act_writes(spans, entries) -> tuple | None:
    """The first entry of ``entries`` (in-flight ACTIVATEs) whose activation-word writes an elementwise
    ACTIVATE with ``spans`` reads, and the access: a hazard inside the ACT unit (``first_conflict`` of its
    activation-word reads alone, so only a write of the entry can conflict)."""
    reads = tuple(span for span in spans if span[0] == _ACT_SPACE and not span[3])
    if reads:
        for e in entries:
            hit = first_conflict(reads, e[2])
            if hit is not None:
                return e, hit
    return None


def first_conflict(spans, entry_spans) -> Access | None:
    """The first of ``spans`` that conflicts (``golden.timing.conflict``) with one of ``entry_spans``."""
    for space, lo, hi, write, access in spans:
        for space2, lo2, hi2, write2, _ in entry_spans:
            if space == space2 and (write or write2) and lo < hi2 and lo2 < hi:
                return access
    return None


def checked(command, config: NpuConfig, precision: Precision, cur: int, cache: dict) -> tuple:
    """``(error code, accepted command or None, its accesses as spans)`` of one program entry, through
    ``cache`` (a dict the caller keeps for one configuration; the result is a pure function of the entry,
    the precision and the PE buffer ``cur``)."""
    key = (command, precision, cur)
    hit = cache.get(key)
    if hit is None:
        code, cmd = validate(command, config, precision)
        hit = cache[key] = (code, cmd, _spans(accesses(cmd, config, precision, cur)) if cmd is not None else ())
    return hit


class DependencyTracker:
    """The commands that may still run, per unit, as a program is fed in order (``dispatch``), on an NPU
    of ``config`` (its dataflow and array latency decide which COMPUTEs may still drain)."""

    def __init__(self, config: NpuConfig):
        self.config = config
        self.running = [[] for _ in Unit]      # per unit, (index, cmd, spans), oldest first
        #: Units that take a command while earlier ones are in flight: unit -> (cycles, per command): a
        #: command has surely finished once the ones after it, all but the newest, account for ``cycles``
        #: (their rows plus ``per command`` each; the module docstring, with a cycle of margin). None
        #: (output-stationary EX): at most the last two are in flight.
        self.pipelined = {_EX: (array_latency(config.rows, config.cols) + 2, 0) if config.dataflow == "ws"
                          else None, _ACT: (ACT_LATENCY + 2, 1)}    # (an elementwise row: one cycle more)

    def needed(self, cmd: Command, accs) -> int:
        """The fewest tokens (``Wait`` bits) that order ``cmd`` with these accesses."""
        return self.needed_spans(cmd, _spans(accs))

    def needed_spans(self, cmd: Command, spans) -> int:
        unit = _UNIT[cmd.op]
        source = _STREAM_SOURCE.get(unit)
        waits = 0
        if unit == _ACT and _reads_act_writes(spans, self.running[_ACT]):
            waits |= int(Wait.ACT)
        for u, token in _TOKENS:
            entries = self.running[u]
            if u == unit or not entries:
                continue
            last = entries[-1]
            if first_conflict(spans, last[2]):
                if u != source or not streams(cmd, spans, last, self.config):
                    waits |= token
                    continue
                waits |= _STREAM
            if any(first_conflict(spans, e[2]) for e in entries[:-1]):      # (an older COMPUTE / ACTIVATE)
                waits |= _EX_OLDER if u == _EX else token
        return waits

    def dispatch(self, index: int, cmd: Command, accs):
        """Account for an accepted command; ``HazardError`` if it is not ordered."""
        self.dispatch_spans(index, cmd, _spans(accs))

    def dispatch_spans(self, index: int, cmd: Command, spans):
        running = self.running
        op = cmd.op
        if op == Opcode.ACTIVATE:
            check_in_place(index, cmd)
        if op in _BARRIER_OPS:
            for entries in running:
                entries.clear()
        else:
            wait = cmd.wait
            if wait:
                for u, token in _TOKENS:
                    if wait & token:
                        running[u].clear()
                if wait & _EX_OLDER:
                    del running[_EX][:-1]
            unit = _UNIT[op]
            source = _STREAM_SOURCE.get(unit) if wait & _STREAM else None
            if unit == _ACT:
                hit = _reads_act_writes(spans, running[_ACT])
                if hit is not None:
                    raise HazardError((index, cmd), (hit[0][0], hit[0][1]), hit[1], int(Wait.ACT))
            for u, entries in enumerate(running):
                if u == unit or not entries:
                    continue
                for e in entries:
                    if u == source and e is entries[-1] and streams(cmd, spans, e, self.config):
                        continue
                    hit = first_conflict(spans, e[2])
                    if hit is not None:
                        token = WAIT_OF_UNIT[Unit(u)] if e is entries[-1] or u != _EX else _EX_OLDER
                        raise HazardError((index, cmd), (e[0], e[1]), hit, token)
        unit = _UNIT.get(op)
        if op == Opcode.PRELOAD:         # (PE buffers: ordered by dispatch, the module docstring)
            spans = _without_pew(spans)
        elif op == Opcode.COMPUTE and running[_EX]:
            last = running[_EX][-1]
            running[_EX][-1] = (last[0], last[1], _without_pew(last[2]))
        elif op == Opcode.ACTIVATE and running[_ACT]:       # (the ones before it lost them already)
            last = running[_ACT][-1]
            running[_ACT][-1] = (last[0], last[1], _without_row_reads(last[2]))
        if unit is not None:
            entries = running[unit]
            if unit in self.pipelined:
                self._finished(self.pipelined[unit], entries)
                entries.append((index, cmd, spans))
            else:
                running[unit] = [(index, cmd, spans)]

    @staticmethod
    def _finished(rule, entries: list):
        """Drop the entries that have surely finished once a new command of their unit dispatches
        (behind ``entries[-1]``), by ``rule`` (a value of ``pipelined``)."""
        if rule is None:
            del entries[:-1]
            return
        cycles, per_command = rule
        covered = 0                          # of the commands after each entry, the newest one's excluded
        for i in range(len(entries) - 2, -1, -1):
            covered += entries[i + 1][1].rows + per_command
            if covered >= cycles:
                del entries[:i + 1]
                return


def walk(program: Program, config: NpuConfig):
    """(index, accepted command or None, its access spans) for each command, tracking the precision and
    PE buffer state that validation and accesses depend on."""
    precision, cur, cache = Precision.INT8, 0, {}
    for index, command in enumerate(program.commands):
        _, cmd, spans = checked(command, config, precision, cur, cache)
        if cmd is None:
            yield index, None, ()
            continue
        yield index, cmd, spans
        if cmd.op == Opcode.CONFIG:
            precision = Precision(cmd.precision)
        elif cmd.op == Opcode.PRELOAD:
            cur = 1 - cur


def order_program(program: Program, config: NpuConfig) -> Program:
    """The program with the fewest ``wait`` tokens that order it added to each accepted command (tokens
    already set are kept). Raw-int commands stay raw ints; rejected ones are unchanged."""
    tracker, commands = DependencyTracker(config), []
    for index, cmd, spans in walk(program, config):
        original = program.commands[index]
        if cmd is None:
            commands.append(original)
            continue
        needed = 0 if cmd.op in _BARRIER_OPS else tracker.needed_spans(cmd, spans)
        if needed & ~cmd.wait:
            cmd = cmd.with_wait(cmd.wait | needed)
        elif isinstance(original, Command):
            cmd = original                   # (the entry itself, not an equal one from the cache)
        tracker.dispatch_spans(index, cmd, spans)
        commands.append(cmd if isinstance(original, Command) else encode(cmd))
    return Program(commands, program.data_in)


def check_program(program: Program, config: NpuConfig):
    """Raise ``HazardError`` (naming both commands) if the program's tokens leave a hazard unordered."""
    tracker = DependencyTracker(config)
    for index, cmd, spans in walk(program, config):
        if cmd is not None:
            tracker.dispatch_spans(index, cmd, spans)
