"""The opennpu instruction set: one definition that encodes and decodes for compiler, models, RTL and tests.

Binary format
-------------
Every command is one 128-bit little-endian word. Bits ``[3:0]`` hold the opcode; the other fields sit
at fixed positions per opcode (table ``FIELDS`` below; the RTL builds its ``data.StructLayout`` views
from the same table). Bits not covered by a field are reserved and must be zero. Every opcode carries
``wait`` in bits ``[126:120]``: the dependency tokens the compiler sets (``Wait``, below).

======== ====== ==============================================================================
opcode   value  fields (bit offset:width)
======== ====== ==============================================================================
CONFIG   1      precision 4:2, act 6:2 (0 clamp only, 1 LUT), out_zp 8:8 s, qmin 16:8 s,
                qmax 24:8 s, shift 32:8 s (>0 left, <0 right), multiplier 40:31 (Q31 M0),
                single_round 71:1 (0: gemmlowp's double rounding, 1: TFLite's single rounding),
                dw_width 72:8, dw_period 80:8, dw_height 88:8, dw_pad 96:8 s, dw_stride2 104:1 (the image
                a depthwise COMPUTE streams and the outputs it writes, below; ``dw_width <= dw_period``)
LOAD     2      buf 4:2 (0 act, 1 wgt), addr 8:16, rows 24:16
LOAD_LUT 3      table 4:1 (``LutTable``: 0 the activation LUT, 256 int8 entries follow on data-in;
                1 the elementwise tables, 512 int32 little-endian entries follow: table X, then Y)
LOAD_BIAS 4     bank 4:1 (``cols`` int32 little-endian follow on data-in; two banks, so the next
                tile's bias loads while ACTIVATE reads the other bank)
PRELOAD  5      addr 8:16, krows 24:8 (K rows of the tile), ncols 32:8 (N columns of the tile)
COMPUTE  6      aaddr 8:16, accaddr 24:16, rows 40:16, accumulate 56:1, astep 57:2 (``AStep``:
                the activation words the rows read; weight-stationary only, zero in output-stationary),
                dw 59:1, drow 96:8 s, dcol 104:8 (depthwise, below; weight-stationary only, zero otherwise),
                waddr 64:16, mrows 80:8, ncols 88:8 (the last three: output-stationary only, zero in
                weight-stationary)
ACTIVATE 7      accaddr 8:16, aaddr 24:16, rows 40:16, dest 56:1 (0 act SRAM, 1 data-out),
                bank 57:1 (bias bank), perchan 58:1 (per-channel requantization, below),
                ew 59:1 (elementwise, below), xaddr 64:16, yaddr 80:16 (ew only, zero otherwise)
STORE    8      buf 4:2 (0 act, 1 wgt, 2 acc), addr 8:16, rows 24:16
COUNTERS 9      (counter snapshot to data-out)
FENCE    10     (wait until all work is done)
LOAD_QUANT 11   bank 4:1 (per-channel requantization of a bias bank: ``cols`` int32 little-endian
                multipliers M0 in 0..2^31-1, then ``cols`` int8 shifts in -31..30, on data-in)
======== ====== ==============================================================================

``ACTIVATE`` with ``ew`` 59:1 is elementwise: instead of accumulator rows, row j reads activation words
``xaddr + j`` and ``yaddr + j`` (lane i: int8 value i of each word, 0 beyond ``rows``) and presents
``X[x + 128]`` as the accumulator and ``Y[y + 128]`` as the bias of the activation unit, which
requantizes their sum as any ACTIVATE does (``X``, ``Y``: the two 256-entry int32 elementwise tables
``LOAD_LUT table=1`` fills). So TFLite's ADD (each input rescaled, then the sum) runs exactly, whatever
its scales: the compiler computes each input's rescaling into its table. ``accaddr`` must be 0 then.
It reads one word a cycle, so a row takes two cycles. Its output words may coincide with its x or y
words (in place) but not overlap them otherwise (a row would read what an earlier row wrote): the golden
model and the drivers refuse such a program (``golden.deps.OverlapError``).

``ACTIVATE`` has ``perchan`` 58:1: requantize lane c with the multiplier and shift that ``LOAD_QUANT``
put in bias bank ``bank`` (one per output channel) instead of CONFIG's ``multiplier`` and ``shift``.
The hardware does not check the contents of data-in; the golden model and the drivers
(``sim/driver.program_words``) refuse a LOAD_QUANT whose values are out of range before anything runs.

Dataflows (``NpuConfig.dataflow``) read ``PRELOAD``/``COMPUTE`` differently:

- weight-stationary (``ws``): ``PRELOAD`` moves a K x N weight tile into the PEs; ``COMPUTE`` streams
  ``rows`` activation rows (one SRAM word each: K values) through them into ``rows`` accumulator rows.
  Row j reads activation word ``aaddr + j * step`` (``AStep``: step 1, 2, or 0, every row the word
  ``aaddr``), so a convolution reads its input where it lies, one output row at a time (stride 1 or 2;
  a padding row of zero points for the taps outside the input) instead of im2col rows from the host.
- weight-stationary, ``dw`` 59:1 (depthwise: an R-tap FIR per channel, int8 and a8w4 only): the rows
  are a *stream* of ``rows + R - 1`` words (``R`` = ``NpuConfig.rows``) over an image that CONFIG
  describes: ``dw_height`` rows of ``dw_period`` positions, the first ``dw_width`` of each holding data,
  the others (and every row outside ``0 .. dw_height-1``) padding. Stream word q sits at image row r,
  column c: the first at (``drow``, ``dcol``), then c + 1, or column 0 of row r + 1 after column
  ``dw_period - 1`` (c counts modulo 256). A data position reads the next activation word, ``aaddr``
  first, one after the other (the image lies row after row, ``dw_width`` words a row, padding not
  stored); a padding position is ``dw_pad`` in every lane and reads nothing. Column n of the array
  holds channel n (lane n of the words), and PE(k, n) multiplies lane n of word ``j + R - 1 - k`` by its
  weight: output j, for j = 0 .. ``rows - 1``, is ``sum_k word[j + R - 1 - k][n] * W[k][n]`` (lanes beyond
  the word's are 0). Outputs come in image rows too: output j's column counts from 0 like c (and its row
  from 0, a step after each column ``dw_period - 1``), and only the outputs of columns below ``dw_width``
  are written (with ``dw_stride2``, of even columns in even rows: a stride-2 convolution), to
  ``accaddr``, ``accaddr + 1``, ... (added with ``accumulate``). So a 3x3 convolution of a W-wide image with ``dw_period`` W + 1 takes its 9 taps at
  k = (2 - i) * (W + 1) + 2 - j. It may read the ``rows + R - 1`` words from ``aaddr`` and write the
  ``rows`` accumulator rows from ``accaddr``: both must lie inside their SRAMs.
- output-stationary (``os``): there is no ``PRELOAD`` (it is rejected as an illegal opcode); ``COMPUTE``
  streams ``rows`` K steps: step j reads activation word ``aaddr + j`` (lane i: row i of the output tile,
  one K value; a4w4: two) and the weight row(s) of step j from ``waddr`` (int8: word ``waddr + j``; int4:
  the packed words ``PRELOAD`` uses, two K rows each). Each PE(i, c) accumulates output (i, c) of an
  ``mrows`` x ``ncols`` tile, which is then written (or added, ``accumulate``) to accumulator rows
  ``accaddr .. accaddr + mrows - 1``.

Dependencies (``wait`` 120:7, every opcode)
-------------------------------------------
The hardware compares no addresses. A command waits, before it dispatches, until every unit named in its
``wait`` bits has finished all earlier commands (``Wait.EX_OLDER``: all earlier COMPUTEs but the most
recent one). ``Wait.STREAM`` instead lets a command follow the unit that writes what it reads while that
unit still writes it: a PRELOAD or a COMPUTE may start in the cycle after the last LOAD started, an
ACTIVATE ``array_latency + 2`` cycles after the last COMPUTE started (``golden.timing.STREAM_SOURCE``,
``stream_delay``), so each
word it reads has been written by then (it reads one word a cycle, no faster than the writer writes
them; on other opcodes the bit has no effect). The compiler sets the bits (``golden/deps.py``:
``order_program``); the golden model and the drivers refuse a program in which two conflicting
commands of different units are not ordered by them (``HazardError``, naming both). CONFIG, FENCE and
COUNTERS wait for every unit anyway. Bit 127 is reserved (zero, like every reserved bit) for the token
of a unit still to come.

Room for the units the next issues add: opcodes 12..15 are free (e.g. a max-pooling unit; the
elementwise add is an ACTIVATE mode, ``ew``), and ``wait`` bit 127 gives one more unit a token. Opcodes 0 and 12..15 are illegal
today. Semantic checks that depend on the configuration (address ranges,
supported precisions, ``rows >= 1``) are not part of encoding: the hardware and the golden model reject
such commands with a sticky error code (``ErrorCode``) and execute nothing.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Opcode", "ErrorCode", "Buf", "Precision", "AStep", "LutTable", "ActFn", "Wait", "WAIT_FIELD", "Field", "FIELDS",
           "COMMAND_BITS", "Command", "DecodeError", "encode", "decode", "encode_program", "decode_program",
           "reserved_mask"]

COMMAND_BITS = 128


class Opcode(enum.IntEnum):
    CONFIG = 1
    LOAD = 2
    LOAD_LUT = 3
    LOAD_BIAS = 4
    PRELOAD = 5
    COMPUTE = 6
    ACTIVATE = 7
    STORE = 8
    COUNTERS = 9
    FENCE = 10
    LOAD_QUANT = 11


class ErrorCode(enum.IntEnum):
    """Sticky error status: the first error since reset; later errors do not overwrite it."""
    OK = 0
    BAD_OPCODE = 1       # opcode 0 or 12..15, or PRELOAD on an output-stationary NPU
    BAD_RANGE = 2        # address + rows beyond the SRAM depth, or rows == 0
    BAD_PRECISION = 3    # CONFIG precision the configuration does not support
    BAD_FIELD = 4        # any other illegal field value (buffer id, krows/ncols, qmin > qmax, act, astep,
                         # an elementwise ACTIVATE's accaddr, another's xaddr / yaddr)


class Buf(enum.IntEnum):
    ACT = 0
    WGT = 1
    ACC = 2


class Precision(enum.IntEnum):
    INT8 = 0
    A8W4 = 1
    A4W4 = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> "Precision":
        try:
            return cls[label.upper()]
        except KeyError:
            raise ValueError(f"unknown precision {label!r}; expected one of "
                             f"{[p.label for p in cls]}") from None


class AStep(enum.IntEnum):
    """COMPUTE ``astep``: which activation word row j of a weight-stationary COMPUTE reads."""
    UNIT = 0     # aaddr + j: consecutive words (a GEMM, im2col rows, a stride-1 convolution's output row)
    DOUBLE = 1   # aaddr + 2j: every other word (a stride-2 convolution's output row)
    HOLD = 2     # aaddr for every row (the padding row of zero points, for taps outside the input)

    @property
    def words(self) -> int:
        """The address step between rows."""
        return (1, 2, 0)[self]


class LutTable(enum.IntEnum):
    """LOAD_LUT ``table``: which table the data-in fills."""
    ACT = 0      # the activation LUT: 256 int8 entries
    EW = 1       # the elementwise tables X and Y: 2 x 256 int32 entries

    @property
    def nbytes(self) -> int:
        return (256, 2048)[self]


class ActFn(enum.IntEnum):
    CLAMP = 0   # requantize, add zero point, clamp to [qmin, qmax] (covers none/ReLU/ReLU6)
    LUT = 1     # as CLAMP, then look the int8 result up in the 256-entry LUT


class Wait(enum.IntFlag):
    """Dependency tokens of a command (its ``wait`` field): units whose earlier commands must be done."""
    LD = 1 << 0         # every earlier LOAD, LOAD_BIAS, LOAD_LUT, LOAD_QUANT
    PL = 1 << 1         # every earlier PRELOAD
    EX = 1 << 2         # every earlier COMPUTE, drained into the accumulators
    EX_OLDER = 1 << 3   # every earlier COMPUTE but the most recent one (the one in the drain slot)
    ACT = 1 << 4        # every earlier ACTIVATE
    ST = 1 << 5         # every earlier STORE, COUNTERS
    STREAM = 1 << 6     # follow the writer of what this command reads (``golden.timing.STREAM_SOURCE``)


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    width: int
    signed: bool = False

    @property
    def lo(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1


#: The dependency tokens, at the same place in every opcode.
WAIT_FIELD = Field("wait", 120, 7)

#: Field table per opcode, the single source of the binary format.
FIELDS: dict[Opcode, tuple[Field, ...]] = {
    Opcode.CONFIG: (Field("precision", 4, 2), Field("act", 6, 2), Field("out_zp", 8, 8, True),
                    Field("qmin", 16, 8, True), Field("qmax", 24, 8, True),
                    Field("shift", 32, 8, True), Field("multiplier", 40, 31), Field("single_round", 71, 1),
                    Field("dw_width", 72, 8), Field("dw_period", 80, 8), Field("dw_height", 88, 8),
                    Field("dw_pad", 96, 8, True), Field("dw_stride2", 104, 1)),
    Opcode.LOAD: (Field("buf", 4, 2), Field("addr", 8, 16), Field("rows", 24, 16)),
    Opcode.LOAD_LUT: (Field("table", 4, 1),),
    Opcode.LOAD_BIAS: (Field("bank", 4, 1),),
    Opcode.PRELOAD: (Field("addr", 8, 16), Field("krows", 24, 8), Field("ncols", 32, 8)),
    Opcode.COMPUTE: (Field("aaddr", 8, 16), Field("accaddr", 24, 16), Field("rows", 40, 16),
                     Field("accumulate", 56, 1), Field("astep", 57, 2), Field("dw", 59, 1), Field("waddr", 64, 16),
                     Field("mrows", 80, 8), Field("ncols", 88, 8), Field("drow", 96, 8, True), Field("dcol", 104, 8)),
    Opcode.ACTIVATE: (Field("accaddr", 8, 16), Field("aaddr", 24, 16), Field("rows", 40, 16),
                      Field("dest", 56, 1), Field("bank", 57, 1), Field("perchan", 58, 1), Field("ew", 59, 1),
                      Field("xaddr", 64, 16), Field("yaddr", 80, 16)),
    Opcode.STORE: (Field("buf", 4, 2), Field("addr", 8, 16), Field("rows", 24, 16)),
    Opcode.COUNTERS: (),
    Opcode.FENCE: (),
    Opcode.LOAD_QUANT: (Field("bank", 4, 1),),
}
FIELDS = {op: fields + (WAIT_FIELD,) for op, fields in FIELDS.items()}


#: Per opcode: its field names, and (name, lo, hi) in FIELDS order (what ``Command`` checks).
_SPECS = {op: (frozenset(f.name for f in fields), tuple((f.name, f.lo, f.hi) for f in fields))
          for op, fields in FIELDS.items()}


class DecodeError(ValueError):
    """A 128-bit word that is not a well-formed command (illegal opcode or reserved bits set)."""


@dataclass(frozen=True)
class Command:
    """One decoded command: ``Command(Opcode.LOAD, buf=0, addr=0, rows=4)``.

    Construction checks that exactly the opcode's fields are given and that each fits its width;
    it raises ``ValueError`` naming the field and value otherwise.
    """
    op: Opcode
    args: tuple  # ((name, value), ...) in FIELDS order

    def __init__(self, op, **fields):
        spec = _SPECS.get(op) if type(op) is Opcode else None      # (the common case: no enum call)
        if spec is None:
            try:
                op = Opcode(op)
            except ValueError:
                raise ValueError(f"unknown opcode {op!r}") from None
            spec = _SPECS[op]
        names, ranges = spec
        if not fields.keys() <= names:
            raise ValueError(f"{op.name} has no field(s) {sorted(set(fields) - names)}; fields are "
                             f"{[name for name, _, _ in ranges]}")
        args = []
        get = fields.get
        for name, lo, hi in ranges:
            value = get(name, 0)
            if type(value) is not int:           # (the common case, a plain int, needs no conversion)
                if isinstance(value, enum.Enum):
                    value = int(value.value)
                if isinstance(value, bool):
                    value = int(value)
            if not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{op.name}.{name} = {value!r} out of range {lo}..{hi}")
            args.append((name, value))
        d = self.__dict__                        # (frozen: written once, here)
        d["op"], d["args"] = op, tuple(args)
        d.update(args)                           # fields read as attributes (``cmd.rows``)

    def __getattr__(self, name):                 # (only called for names that are not fields)
        raise AttributeError(f"{object.__getattribute__(self, 'op').name} has no field {name!r}")

    @property
    def fields(self) -> dict:
        return dict(self.args)

    def __repr__(self):
        inner = ", ".join(f"{k}={Wait(v)!r}" if k == "wait" else f"{k}={v}" for k, v in self.args
                          if k != "wait" or v)
        return f"{self.op.name}({inner})"

    def encode(self) -> int:
        return encode(self)

    def with_fields(self, **fields) -> "Command":
        """A copy with some fields replaced (e.g. ``cmd.with_fields(wait=Wait.LD)``)."""
        return Command(self.op, **{**self.fields, **fields})

    def with_wait(self, wait: int) -> "Command":
        """``with_fields(wait=wait)`` without re-checking the other fields (they were checked when this
        command was built); ``wait`` must fit its 7 bits. (The compiler's hot path: ``order_program``.)"""
        wait = int(wait)
        if not WAIT_FIELD.lo <= wait <= WAIT_FIELD.hi:
            raise ValueError(f"{self.op.name}.wait = {wait!r} out of range {WAIT_FIELD.lo}..{WAIT_FIELD.hi}")
        new = object.__new__(Command)
        d = new.__dict__
        d.update(self.__dict__)
        d["wait"] = wait
        d["args"] = self.args[:-1] + (("wait", wait),)           # (wait is the last field of every opcode)
        return new


def encode(cmd: Command) -> int:
    word = int(cmd.op)
    for f in FIELDS[cmd.op]:
        value = getattr(cmd, f.name)
        word |= (value & ((1 << f.width) - 1)) << f.offset
    return word


def reserved_mask(op: Opcode) -> int:
    used = 0xF
    for f in FIELDS[op]:
        used |= ((1 << f.width) - 1) << f.offset
    return ((1 << COMMAND_BITS) - 1) & ~used


def decode(word: int) -> Command:
    """128-bit int -> ``Command``; raises ``DecodeError`` for illegal opcodes or reserved bits."""
    if not isinstance(word, int) or not 0 <= word < (1 << COMMAND_BITS):
        raise DecodeError(f"command word must be an unsigned {COMMAND_BITS}-bit int, got {word!r}")
    try:
        op = Opcode(word & 0xF)
    except ValueError:
        raise DecodeError(f"illegal opcode {word & 0xF} in command word {word:#034x}") from None
    if word & reserved_mask(op):
        raise DecodeError(f"{op.name}: reserved bits set in command word {word:#034x}")
    fields = {}
    for f in FIELDS[op]:
        raw = (word >> f.offset) & ((1 << f.width) - 1)
        if f.signed and raw >> (f.width - 1):
            raw -= 1 << f.width
        fields[f.name] = raw
    return Command(op, **fields)


def encode_program(commands) -> bytes:
    """Commands -> bytes, 16 little-endian bytes per command."""
    return b"".join(encode(c).to_bytes(COMMAND_BITS // 8, "little") for c in commands)


def decode_program(blob: bytes) -> list[Command]:
    if len(blob) % (COMMAND_BITS // 8):
        raise DecodeError(f"program length {len(blob)} is not a multiple of {COMMAND_BITS // 8} bytes")
    step = COMMAND_BITS // 8
    return [decode(int.from_bytes(blob[i:i + step], "little")) for i in range(0, len(blob), step)]
