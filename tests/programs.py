"""Random command streams, valid and malformed, with exactly the data-in they consume.

``random_program(config, rng)`` mixes every command kind with malformed words (random 128-bit words,
illegal opcodes, reserved bits, out-of-range addresses, zero rows, illegal buffers and fields,
unsupported precisions) and ends with a full read-back of the three SRAMs; CONFIGs set random depthwise
images and some weight-stationary COMPUTEs are depthwise (``dw``, random ``drow`` / ``dcol``); ``golden.deps.order_program``
adds the ``wait`` tokens that order it. ``with_bad_commands``
mixes malformed words into an existing program (e.g. a compiled GEMM). Whether a command will be
accepted, and so whether it consumes data-in, is decided by the golden ``validate`` on the precision
the accepted CONFIGs so far have set, so the data-in stream always matches.

The functions take a ``random.Random``: ``programs(config)`` wraps ``random_program`` as a
hypothesis strategy (through ``st.randoms``, so examples shrink and replay), and plain
``Random(seed)`` instances make large batches cheaply.
"""
from __future__ import annotations

import random

from opennpu.compiler.gemm import ACTIVATIONS, build_gemm, random_gemm
from opennpu.config import NpuConfig
from opennpu.golden import numerics
from opennpu.golden.isa import (COMMAND_BITS, FIELDS, WAIT_FIELD, ActFn, AStep, Buf, Command, ErrorCode, LutTable, Opcode,
                                Precision, encode, reserved_mask)
from opennpu.golden.checks import act_span, data_in_bytes, dw_stream_words
from opennpu.golden.deps import OverlapError, check_in_place, order_program
from opennpu.golden.model import k_tile, stream_weight_words, validate, weight_words
from opennpu.golden.program import Program

__all__ = ["ILLEGAL_OPCODES", "BAD_KINDS", "RESET_IMAGE", "sram_dump", "quant_data", "good_command", "bad_command", "rejected_command", "random_program", "long_program",
           "with_bad_commands", "gemm_with_bad_commands", "programs"]

#: Opcode values no configuration implements.
ILLEGAL_OPCODES = [op for op in range(16) if op not in set(Opcode)]
#: Kinds of malformed command ``bad_command`` draws from.
BAD_KINDS = ("random word", "random fields", "bad opcode", "reserved bits", "out of range", "zero rows",
             "bad buffer", "bad field", "bad precision")


def sram_dump(config: NpuConfig) -> list[Command]:
    """STORE every word of the activation, weight and accumulator SRAMs."""
    return [Command(Opcode.STORE, buf=Buf.ACT, addr=0, rows=config.act_depth),
            Command(Opcode.STORE, buf=Buf.WGT, addr=0, rows=config.wgt_depth),
            Command(Opcode.STORE, buf=Buf.ACC, addr=0, rows=config.acc_depth)]


def _span(rng: random.Random, depth: int, max_rows: int) -> tuple[int, int]:
    """An in-range (addr, rows) window, biased towards both ends of the SRAM."""
    rows = rng.randint(1, min(depth, max_rows))
    addr = rng.choice([0, depth - rows, rng.randint(0, depth - rows)])
    return addr, rows


def _depth(config: NpuConfig, buf: Buf) -> int:
    return {Buf.ACT: config.act_depth, Buf.WGT: config.wgt_depth, Buf.ACC: config.acc_depth}[buf]


#: CONFIG's depthwise image after reset (``dw_width``, ``dw_period``, ``dw_height``, ``dw_pad``, ``dw_stride2``).
RESET_IMAGE = dict(dw_width=0, dw_period=0, dw_height=0, dw_pad=0, dw_stride2=0)


def good_command(config: NpuConfig, rng: random.Random, precision: Precision, *, max_rows: int = 8,
                 image: dict = RESET_IMAGE) -> Command:
    """A command that the configuration accepts in the current ``precision``; one in four waits for
    random units besides those the ordering will add (tokens that cost time but are legal). A depthwise
    COMPUTE mostly starts near the current CONFIG's depthwise ``image``, so that it reads and writes."""
    cmd = _good_command(config, rng, precision, max_rows, image)
    return cmd.with_fields(wait=rng.getrandbits(WAIT_FIELD.width)) if rng.random() < 0.25 else cmd


def _good_command(config: NpuConfig, rng: random.Random, precision: Precision, max_rows: int,
                  image: dict) -> Command:
    kinds = ["config", "load", "load", "load_bias", "load_quant", "load_lut", "preload", "compute", "compute",
             "activate", "store", "fence", "counters"]
    kind = rng.choice(kinds)
    if kind == "config":
        return _config_command(config, rng)
    if kind == "load":
        buf = rng.choice([Buf.ACT, Buf.WGT])
        addr, rows = _span(rng, _depth(config, buf), max_rows)
        return Command(Opcode.LOAD, buf=buf, addr=addr, rows=rows)
    if kind == "load_bias":
        return Command(Opcode.LOAD_BIAS, bank=rng.randint(0, 1))
    if kind == "load_quant":
        return Command(Opcode.LOAD_QUANT, bank=rng.randint(0, 1))
    if kind == "load_lut":
        return Command(Opcode.LOAD_LUT, table=rng.choice(list(LutTable)))
    if config.dataflow == "os" and kind in ("preload", "compute"):
        steps = rng.randint(1, min(config.act_depth, max_rows))
        words = stream_weight_words(precision, steps)
        mrows = rng.randint(1, min(config.rows, config.acc_depth))
        return Command(Opcode.COMPUTE, aaddr=rng.randint(0, config.act_depth - steps),
                       accaddr=rng.randint(0, config.acc_depth - mrows), rows=steps, accumulate=rng.randint(0, 1),
                       waddr=rng.randint(0, config.wgt_depth - words), mrows=mrows,
                       ncols=rng.randint(1, config.cols))
    if kind == "preload":
        krows = rng.randint(1, k_tile(config, precision))
        addr = rng.randint(0, config.wgt_depth - weight_words(precision, krows))
        return Command(Opcode.PRELOAD, addr=addr, krows=krows, ncols=rng.randint(1, config.cols))
    if kind == "compute" and precision != Precision.A4W4 and rng.random() < 0.35:
        return _dw_compute(config, rng, max_rows, image)
    if kind == "compute":
        astep = rng.choice(list(AStep))
        words = (config.act_depth + 1) // 2 if astep == AStep.DOUBLE else config.act_depth
        rows = rng.randint(1, min(words, config.acc_depth, max_rows))
        return Command(Opcode.COMPUTE, aaddr=rng.randint(0, config.act_depth - act_span(astep, rows)),
                       accaddr=rng.randint(0, config.acc_depth - rows), rows=rows, accumulate=rng.randint(0, 1),
                       astep=astep)
    if kind == "activate":
        rows = rng.randint(1, min(config.act_depth, config.acc_depth, max_rows))
        fields = dict(aaddr=rng.randint(0, config.act_depth - rows), rows=rows, dest=rng.randint(0, 1),
                      bank=rng.randint(0, 1), perchan=rng.randint(0, 1))
        if rng.random() < 0.3:        # elementwise (its output in place or apart from its inputs)
            cmd = Command(Opcode.ACTIVATE, ew=1, xaddr=rng.randint(0, config.act_depth - rows),
                          yaddr=rng.randint(0, config.act_depth - rows), **fields)
            try:
                check_in_place(0, cmd)
            except OverlapError:
                cmd = cmd.with_fields(aaddr=cmd.xaddr, yaddr=cmd.xaddr)
            return cmd
        return Command(Opcode.ACTIVATE, accaddr=rng.randint(0, config.acc_depth - rows), **fields)
    if kind == "store":
        buf = rng.choice(list(Buf))
        addr, rows = _span(rng, _depth(config, buf), max_rows)
        return Command(Opcode.STORE, buf=buf, addr=addr, rows=rows)
    return Command(Opcode.COUNTERS if kind == "counters" else Opcode.FENCE)


def _config_command(config: NpuConfig, rng: random.Random) -> Command:
    """An accepted CONFIG: any precision of the configuration, random requantization and depthwise image."""
    qmin = rng.randint(-128, 127)
    return Command(Opcode.CONFIG, precision=Precision.from_label(rng.choice(config.precisions)),
                   act=rng.choice(list(ActFn)), out_zp=rng.randint(-128, 127), qmin=qmin,
                   qmax=rng.randint(qmin, 127), shift=rng.randint(numerics.SHIFT_MIN, numerics.SHIFT_MAX),
                   multiplier=rng.choice([0, 1 << 30, (1 << 31) - 1, rng.getrandbits(31)]),
                   single_round=rng.randint(0, 1), **_dw_image(rng))


def _dw_image(rng: random.Random) -> dict:
    """CONFIG's depthwise image: mostly small (so that COMPUTEs meet its rows and its pad columns), now
    and then none (period or width 0) or up to 255."""
    period = rng.choices([0, rng.randint(1, 6), rng.randint(1, 255)], weights=[1, 14, 5])[0]
    height = rng.choices([0, rng.randint(1, 4), rng.randint(0, 255)], weights=[1, 13, 6])[0]
    width = rng.choices([0, period, rng.randint(0, period)], weights=[1, 13, 6])[0]
    return dict(dw_period=period, dw_width=width, dw_height=height, dw_pad=rng.randint(-128, 127),
                dw_stride2=rng.randint(0, 1))


def _dw_compute(config: NpuConfig, rng: random.Random, max_rows: int, image: dict = RESET_IMAGE) -> Command:
    """An accepted depthwise COMPUTE (its ``rows + R - 1`` words inside the activation SRAM): its start
    mostly in or next to ``image``, anywhere now and then (``dcol`` past the period too)."""
    rows = rng.randint(1, min(config.act_depth - dw_stream_words(config, 1) + 1, config.acc_depth, max_rows))
    near = rng.random() < 0.75
    return Command(Opcode.COMPUTE, aaddr=rng.randint(0, config.act_depth - dw_stream_words(config, rows)),
                   accaddr=rng.randint(0, config.acc_depth - rows), rows=rows, accumulate=rng.randint(0, 1), dw=1,
                   drow=rng.randint(-1, min(image["dw_height"], 128) - 1) if near else rng.randint(-128, 127),
                   dcol=rng.randint(0, image["dw_period"]) if near else rng.randint(0, 255))


def quant_data(config: NpuConfig, rng: random.Random) -> bytes:
    """A LOAD_QUANT's data-in: random in-range multipliers and shifts (edge values included), padded
    with random bytes (padding is ignored)."""
    cols = config.cols
    mults = [rng.choice([0, 1 << 30, (1 << 31) - 1, rng.getrandbits(31)]) for _ in range(cols)]
    shifts = [rng.choice([numerics.SHIFT_MIN, numerics.SHIFT_MAX, 0, rng.randint(numerics.SHIFT_MIN,
                                                                                 numerics.SHIFT_MAX)])
              for _ in range(cols)]
    data = b"".join(m.to_bytes(4, "little") for m in mults) + bytes(s & 0xFF for s in shifts)
    return data + rng.randbytes(data_in_bytes(Command(Opcode.LOAD_QUANT), config) - len(data))


def _beyond(rng: random.Random, depth: int, rows: int) -> int:
    """A 16-bit address at which ``rows`` words overrun an SRAM of ``depth`` words."""
    return rng.randint(min(max(0, depth - rows + 1), 0xFFFF), 0xFFFF)


#: rows of a rejected LOAD, whose data-in the program carries (and the LD unit drops): mostly short, so
#: that random programs stay small; one in 16 random LOAD words keeps its 16-bit rows.
_LONG_DROP = 300
_ROWS = next(f for f in FIELDS[Opcode.LOAD] if f.name == "rows")


def _short_load(rng: random.Random, word: int) -> int:
    """A random word, its LOAD ``rows`` field usually cut to a few rows."""
    if word & 0xF != Opcode.LOAD or rng.random() < 1 / 16:
        return word
    mask = ((1 << _ROWS.width) - 1) << _ROWS.offset
    return word & ~mask | rng.randint(0, 8) << _ROWS.offset


def bad_command(config: NpuConfig, rng: random.Random, kind: str | None = None) -> int:
    """A raw 128-bit word meant to be rejected; ``kind`` from ``BAD_KINDS`` (random if None).

    "random word" and, often, "random fields" can draw a valid command; ``rejected_command`` redraws
    until the golden model rejects the word.
    """
    kind = kind or rng.choice(BAD_KINDS)
    if kind == "random word":
        return _short_load(rng, rng.getrandbits(COMMAND_BITS))
    if kind == "random fields":          # a legal opcode with random field values: mostly range errors
        op = rng.choice(list(Opcode))
        return _short_load(rng, rng.getrandbits(COMMAND_BITS) & ~reserved_mask(op) & ~0xF | op)
    if kind == "bad opcode":
        upper = rng.getrandbits(COMMAND_BITS - 4) if rng.random() < 0.5 else 0
        return upper << 4 | rng.choice(ILLEGAL_OPCODES)
    if kind == "reserved bits":
        good = encode(good_command(config, rng, Precision.INT8))
        mask = reserved_mask(Opcode(good & 0xF))
        return good | 1 << rng.choice([i for i in range(COMMAND_BITS) if mask >> i & 1])
    if kind == "zero rows":
        op = rng.choice([Opcode.LOAD, Opcode.STORE, Opcode.COMPUTE, Opcode.ACTIVATE])
        if op in (Opcode.LOAD, Opcode.STORE):
            return encode(Command(op, buf=rng.randint(0, 1), addr=rng.randint(0, 3), rows=0))
        fields = {"aaddr": 0, "accaddr": 0, "rows": 0}
        return encode(Command(op, **fields, **({"dest": rng.randint(0, 1)} if op == Opcode.ACTIVATE else {})))
    if kind == "out of range":
        op = rng.choice([Opcode.LOAD, Opcode.STORE, Opcode.COMPUTE, Opcode.ACTIVATE, Opcode.PRELOAD])
        if op in (Opcode.LOAD, Opcode.STORE):
            buf = rng.choice([Buf.ACT, Buf.WGT] + ([Buf.ACC] if op == Opcode.STORE else []))
            rows = rng.choice([1, rng.randint(1, 0xFFFF) if op == Opcode.STORE else rng.randint(1, _LONG_DROP)])
            return encode(Command(op, buf=buf, addr=_beyond(rng, _depth(config, buf), rows), rows=rows))
        if op == Opcode.PRELOAD:
            return encode(Command(op, addr=_beyond(rng, config.wgt_depth, 1), krows=rng.randint(1, config.rows),
                                  ncols=rng.randint(1, config.cols)))
        rows = rng.randint(1, min(config.act_depth, config.acc_depth))
        fields = {"aaddr": rng.randint(0, config.act_depth - rows),
                  "accaddr": rng.randint(0, config.acc_depth - rows), "rows": rows}
        side = rng.choice(["aaddr", "accaddr"])
        fields[side] = _beyond(rng, config.act_depth if side == "aaddr" else config.acc_depth, rows)
        if op == Opcode.COMPUTE and rng.random() < 0.3:      # depthwise: its rows + R - 1 words overrun
            words = dw_stream_words(config, rows)
            fields.update(dw=1, aaddr=rng.choice([max(0, config.act_depth - words + 1),
                                                  _beyond(rng, config.act_depth, words)]))
        if op == Opcode.ACTIVATE:
            fields.update(dest=0, bank=rng.randint(0, 1))   # dest=1 would ignore aaddr
        return encode(Command(op, **fields))
    if kind == "bad buffer":
        op = rng.choice([Opcode.LOAD, Opcode.STORE])
        buf = rng.choice([2, 3] if op == Opcode.LOAD else [3])
        return encode(Command(op, buf=0, addr=0, rows=1)) | buf << 4
    if kind == "bad field":
        choice = rng.randint(0, 5)
        if choice == 0:
            qmax = rng.randint(-128, 126)
            return encode(Command(Opcode.CONFIG, qmin=rng.randint(qmax + 1, 127), qmax=qmax))
        if choice == 1:
            return encode(Command(Opcode.CONFIG, qmin=-128, qmax=127)) | rng.randint(2, 3) << 6   # act
        if choice == 2:
            shift = rng.choice([-128, numerics.SHIFT_MIN - 1, numerics.SHIFT_MAX + 1, 127])
            return encode(Command(Opcode.CONFIG, shift=shift, qmin=-128, qmax=127))
        if choice == 3 and rng.random() < 0.5:     # elementwise ACTIVATE with an accaddr, another with a yaddr
            ew = rng.randint(0, 1)
            return encode(Command(Opcode.ACTIVATE, rows=1, dest=1, ew=ew, accaddr=ew * rng.randint(1, 0xFFFF),
                                  yaddr=(1 - ew) * rng.randint(1, 0xFFFF)))
        if choice == 3:
            krows = rng.choice([0, 2 * config.rows + 1, 255])
            return encode(Command(Opcode.PRELOAD, addr=0, krows=krows, ncols=1))
        if choice == 4:
            return encode(Command(Opcode.PRELOAD, addr=0, krows=1, ncols=rng.choice([0, config.cols + 1, 255])))
        return _bad_depthwise(config, rng)
    if kind == "bad precision":
        if "a4w4" in config.precisions and rng.random() < 0.25:     # depthwise: rejected in a4w4 only
            return encode(_dw_compute(config, rng, 8))
        unsupported = [p.value for p in Precision if p.label not in config.precisions] + [3]
        return encode(Command(Opcode.CONFIG, qmin=-128, qmax=127)) | rng.choice(unsupported) << 4
    raise ValueError(f"unknown bad-command kind {kind!r}; expected one of {BAD_KINDS}")


def _bad_depthwise(config: NpuConfig, rng: random.Random) -> int:
    """A depthwise field out of its rules: ``dw`` with an ``astep``, ``drow`` / ``dcol`` without ``dw``,
    a CONFIG image wider than its period."""
    choice = rng.randint(0, 2)
    if choice == 0:
        return encode(Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=1, dw=1, astep=rng.randint(1, 3)))
    if choice == 1:
        value = rng.choice([rng.randint(-128, -1), rng.randint(1, 127)])
        return encode(Command(Opcode.COMPUTE, aaddr=0, accaddr=0, rows=1,
                              **({"drow": value} if rng.random() < 0.5 else {"dcol": abs(value)})))
    period = rng.randint(0, 254)
    return encode(Command(Opcode.CONFIG, qmin=-128, qmax=127, dw_period=period, dw_width=rng.randint(period + 1, 255)))


def rejected_command(config: NpuConfig, rng: random.Random, precision: Precision = Precision.INT8,
                     kind: str | None = None) -> int:
    """A ``bad_command`` that the golden model rejects in ``precision`` (redrawn until it is)."""
    while True:
        word = bad_command(config, rng, kind)
        if validate(word, config, precision)[0] != ErrorCode.OK:
            return word


class _Stream:
    """Builds a command list and its data-in, tracking the precision that decides acceptance."""

    def __init__(self, config: NpuConfig, rng: random.Random, counters: bool = True):
        self.config, self.rng, self.counters = config, rng, counters
        self.commands: list = []
        self.data = bytearray()
        self.precision = Precision.INT8
        self.image = RESET_IMAGE                 # the depthwise image of the last accepted CONFIG

    def add(self, command):
        """Append ``command`` and, if it reads data-in (accepted or rejected: the hardware drops a rejected
        command's data), random bytes of the right length. An accepted COUNTERS is dropped unless
        ``counters``."""
        word = command if isinstance(command, int) else encode(command)
        code, cmd = validate(word, self.config, self.precision)
        if code == ErrorCode.OK and cmd.op == Opcode.COUNTERS and not self.counters:
            return
        self.commands.append(command)
        if code == ErrorCode.OK and cmd.op == Opcode.CONFIG:
            self.precision = Precision(cmd.precision)
            self.image = {name: cmd.fields[name] for name in RESET_IMAGE}
        need = data_in_bytes(word, self.config)
        if code == ErrorCode.OK and cmd.op == Opcode.LOAD_QUANT:
            self.data += quant_data(self.config, self.rng)
        elif need:
            self.data += self.rng.randbytes(need)

    def add_good(self, max_rows: int):
        """Append a ``good_command``; a depthwise COMPUTE with no depthwise image set yet mostly gets a
        CONFIG with one before it (CONFIGs are rare, and with no image a depthwise COMPUTE reads and
        writes nothing)."""
        cmd = good_command(self.config, self.rng, self.precision, max_rows=max_rows, image=self.image)
        if cmd.op == Opcode.COMPUTE and cmd.dw and not self.image["dw_period"] and self.rng.random() < 0.9:
            self.add(_config_command(self.config, self.rng))
            cmd = _dw_compute(self.config, self.rng, max_rows, self.image).with_fields(wait=cmd.wait)
        self.add(cmd)

    def program(self) -> Program:
        return order_program(Program(list(self.commands), bytes(self.data)), self.config)


def random_program(config: NpuConfig, rng: random.Random, *, max_commands: int = 24, bad_rate: float = 0.25,
                   max_rows: int = 8, counters: bool = True, dump: bool = True) -> Program:
    """A random mix of accepted and rejected commands, then (``dump``) a read-back of every SRAM.

    ``counters=False`` leaves out COUNTERS (its snapshot holds ``cycles``, which back-pressure changes).
    """
    s = _Stream(config, rng, counters)
    for _ in range(rng.randint(1, max_commands)):
        if rng.random() < bad_rate:
            s.add(bad_command(config, rng))
        else:
            s.add_good(max_rows)
    for command in sram_dump(config) if dump else []:
        s.add(command)
    return s.program()


def long_program(config: NpuConfig, rng: random.Random, *, commands: int, data_bytes: int,
                 bad_rate: float = 0.1, max_rows: int = 8) -> Program:
    """Like ``random_program`` (without COUNTERS, whose snapshot holds ``cycles``), but at least
    ``commands`` commands and ``data_bytes`` data-in bytes before the SRAM read-back: enough for a
    given number of host-link frames per stream."""
    s = _Stream(config, rng, counters=False)
    while len(s.commands) < commands or len(s.data) < data_bytes:
        if rng.random() < bad_rate:
            s.add(bad_command(config, rng))
        else:
            s.add_good(max_rows)
    for command in sram_dump(config):
        s.add(command)
    return s.program()


def with_bad_commands(config: NpuConfig, program: Program, rng: random.Random, count: int) -> Program:
    """``program`` with ``count`` rejected words inserted at random places, and the data-in each of them
    takes (random bytes, which the hardware drops) at its place in the data-in stream.

    Only words the golden model rejects in the precision current at that place are inserted, so the
    rest of the program runs exactly as before.
    """
    commands = list(program.commands)
    slots = sorted(rng.randint(0, len(commands)) for _ in range(count))
    out, data, offset, precision, index = [], bytearray(), 0, Precision.INT8, 0
    for position, command in enumerate(commands + [None]):
        while index < len(slots) and slots[index] == position:
            word = rejected_command(config, rng, precision)
            out.append(word)
            data += rng.randbytes(data_in_bytes(word, config))
            index += 1
        if command is None:
            break
        word = command if isinstance(command, int) else encode(command)
        code, cmd = validate(word, config, precision)
        if code == ErrorCode.OK and cmd.op == Opcode.CONFIG:
            precision = Precision(cmd.precision)
        take = data_in_bytes(word, config)
        data += program.data_in[offset:offset + take]
        offset += take
        out.append(command)
    return Program(out, bytes(data))


def gemm_with_bad_commands(config: NpuConfig, rng: random.Random, *, max_dim: int = 12, bad: int = 3):
    """A compiled random GEMM (odd shapes, any activation) with malformed words mixed in and the SRAMs
    read back at the end; returns ``(GemmProgram, Program)``."""
    m, k, n = (rng.randint(1, max_dim) for _ in range(3))
    act = rng.choice(ACTIVATIONS)
    gp = build_gemm(config, random_gemm(m, k, n, "int8", act, seed=rng.getrandbits(32)))
    mixed = with_bad_commands(config, gp.program, rng, rng.randint(0, bad))
    return gp, order_program(Program(mixed.commands + sram_dump(config), mixed.data_in), config)


def programs(config: NpuConfig, **options):
    """Hypothesis strategy of ``random_program(config, rng, **options)``."""
    from hypothesis import strategies as st
    return st.builds(lambda rng: random_program(config, rng, **options), st.randoms(use_true_random=False))

