"""Which commands a configuration accepts: one rule per opcode, evaluated by the golden model on ints
(``validate``) and by the RTL's ``hdl/decoder.py`` on the command word's fields.

A rule ``rule(f, precision, config, ops) -> (precision_ok, field_ok, range_ok)`` reads the fields of
``f`` (a ``Command`` or an Amaranth ``View``) and combines conditions only with comparisons, ``+``,
shifts by constants and ``ops`` (``select``, ``all``, ``any``), so the same expression is Python
arithmetic in the golden model and logic in the RTL. The error code is the first failing check in the order opcode,
reserved bits, precision, other field values, address ranges (``ErrorCode``).
"""
from __future__ import annotations

from types import SimpleNamespace

from opennpu.config import NpuConfig

from . import numerics
from .isa import FIELDS, ActFn, AStep, Buf, Command, DecodeError, ErrorCode, LutTable, Opcode, Precision, decode, encode
from .program import ProgramError

__all__ = ["PY_OPS", "k_tile", "act_span", "dw_stream_words", "weight_words", "stream_weight_words", "data_in_beats", "data_in_bytes",
           "quant_params",
           "rules", "check", "validate"]

#: ``ops`` for Python integers.
PY_OPS = SimpleNamespace(select=lambda cond, a, b: a if cond else b, all=lambda *conds: all(conds),
                         any=lambda *conds: any(conds))


def k_tile(config: NpuConfig, precision, ops=PY_OPS):
    """K depth of one weight tile: two int4 activations per PE per cycle in a4w4."""
    return ops.select(precision == Precision.A4W4, 2 * config.rows, config.rows)


def weight_words(precision, krows, ops=PY_OPS):
    """Weight SRAM words holding ``krows`` rows of a tile (int4 weights pack two rows per word)."""
    return ops.select(precision == Precision.INT8, krows, (krows + 1) >> 1)


def stream_weight_words(precision, steps, ops=PY_OPS):
    """Weight SRAM words an output-stationary ``COMPUTE`` of ``steps`` K steps reads: one per step,
    except a8w4, where a word holds the weight rows of two steps."""
    return ops.select(precision == Precision.A8W4, (steps + 1) >> 1, steps)


def data_in_beats(opcode, buf, rows, config: NpuConfig, ops=PY_OPS):
    """Data-in beats a command takes, whether it is accepted or rejected (the LD unit consumes a rejected
    command's beats and drops them): a LOAD ``rows`` words of its buffer (activation or weight; a LOAD of
    another buffer takes none), LOAD_BIAS / LOAD_QUANT / LOAD_LUT their register or table, any other
    opcode none. It reads only the opcode and LOAD's ``buf`` and ``rows`` fields (LOAD_LUT's ``table`` is
    ``buf``'s low bit), so it is defined for any word; the
    golden model, the drivers and the dispatcher (``HW_OPS``) use this one rule."""
    c = config
    load = ops.select(buf == Buf.ACT, rows * c.beats(c.act_word_bytes),
                      ops.select(buf == Buf.WGT, rows * c.beats(c.wgt_word_bytes), 0))
    return ops.select(opcode == Opcode.LOAD, load,
                      ops.select(opcode == Opcode.LOAD_BIAS, c.beats(4 * c.cols),
                                 ops.select(opcode == Opcode.LOAD_QUANT, c.beats(5 * c.cols),
                                            ops.select(opcode == Opcode.LOAD_LUT,
                                                       ops.select(buf == LutTable.EW, c.beats(LutTable.EW.nbytes),
                                                                  c.beats(LutTable.ACT.nbytes)), 0))))


_LOAD_BUF, _LOAD_ROWS = (next(f for f in FIELDS[Opcode.LOAD] if f.name == name) for name in ("buf", "rows"))


def data_in_bytes(command: Command | int, config: NpuConfig) -> int:
    """Data-in bytes a command (a ``Command`` or a raw word, accepted or not) takes: ``data_in_beats``
    whole beats."""
    word = encode(command) if isinstance(command, Command) else int(command)
    buf = word >> _LOAD_BUF.offset & ((1 << _LOAD_BUF.width) - 1)
    rows = word >> _LOAD_ROWS.offset & ((1 << _LOAD_ROWS.width) - 1)
    return data_in_beats(word & 0xF, buf, rows, config) * config.bus_bytes


def quant_params(data: bytes, config: NpuConfig) -> tuple:
    """A ``LOAD_QUANT``'s data-in (padding included) -> (multipliers, shifts), one per lane, as int lists;
    ``ProgramError`` naming the lane if a multiplier or shift is outside what the activation unit takes
    (the hardware does not check data-in, so the golden model and the drivers refuse it up front)."""
    cols = config.cols
    multipliers = [int.from_bytes(data[4 * i:4 * i + 4], "little", signed=True) for i in range(cols)]
    shifts = [int.from_bytes(data[4 * cols + i:4 * cols + i + 1], "little", signed=True) for i in range(cols)]
    for lane, (mult, shift) in enumerate(zip(multipliers, shifts)):
        if not 0 <= mult < 1 << 31 or not numerics.SHIFT_MIN <= shift <= numerics.SHIFT_MAX:
            raise ProgramError(f"LOAD_QUANT lane {lane}: multiplier {mult} (0..2^31-1) or shift {shift} "
                               f"({numerics.SHIFT_MIN}..{numerics.SHIFT_MAX}) out of range")
    return multipliers, shifts


def _fits(ops, addr, count, limit):
    return ops.all(count >= 1, addr + count <= limit)


def _config(f, p, cfg, ops):
    supported = ops.any(*(f.precision == Precision.from_label(label) for label in cfg.precisions))
    return supported, ops.all(f.act <= max(ActFn), f.qmin <= f.qmax, f.shift >= numerics.SHIFT_MIN,
                              f.shift <= numerics.SHIFT_MAX, f.dw_width <= f.dw_period), True


def _buffer(last: Buf):
    def rule(f, p, cfg, ops):
        depth = ops.select(f.buf == Buf.ACT, cfg.act_depth, ops.select(f.buf == Buf.WGT, cfg.wgt_depth,
                                                                       cfg.acc_depth))
        return True, f.buf <= last, _fits(ops, f.addr, f.rows, depth)
    return rule


def _preload(f, p, cfg, ops):
    return True, ops.all(f.krows >= 1, f.krows <= k_tile(cfg, p, ops), f.ncols >= 1, f.ncols <= cfg.cols), \
        f.addr + weight_words(p, f.krows, ops) <= cfg.wgt_depth


def act_span(astep, rows, ops=PY_OPS):
    """Activation words from ``aaddr`` up to the last one a weight-stationary COMPUTE of ``rows`` rows
    reads (``AStep``; ``rows`` >= 1)."""
    return ops.select(astep == AStep.DOUBLE, (rows << 1) - 1, ops.select(astep == AStep.HOLD, 1, rows))


def _act_fits(f, depth, ops):
    """``aaddr + act_span(astep, rows) <= depth``, as one adder and compares with constants (``rows << 1``
    is wiring; a stride-2 read ends a word before ``aaddr + 2 rows``)."""
    double = f.astep == AStep.DOUBLE
    end = f.aaddr + ops.select(double, f.rows << 1, f.rows)
    return ops.select(f.astep == AStep.HOLD, f.aaddr < depth, ops.select(double, end <= depth + 1, end <= depth))


def dw_stream_words(config: NpuConfig, rows):
    """Words a depthwise COMPUTE of ``rows`` outputs streams through the array (``golden/isa.py``): its
    rows, behind the ``config.rows - 1`` that fill its FIR taps."""
    return rows + config.rows - 1


def _compute_ws(f, p, cfg, ops):
    dw = f.dw == 1
    acts = ops.select(dw, f.aaddr + dw_stream_words(cfg, f.rows) <= cfg.act_depth, _act_fits(f, cfg.act_depth, ops))
    return ops.any(f.dw == 0, p != Precision.A4W4), \
        ops.all(f.waddr == 0, f.mrows == 0, f.ncols == 0, f.astep <= max(AStep),
                ops.select(dw, f.astep == AStep.UNIT, ops.all(f.drow == 0, f.dcol == 0))), \
        ops.all(f.rows >= 1, acts, f.accaddr + f.rows <= cfg.acc_depth)


def _compute_os(f, p, cfg, ops):
    return True, ops.all(f.mrows >= 1, f.mrows <= cfg.rows, f.ncols >= 1, f.ncols <= cfg.cols, f.astep == 0,
                         f.dw == 0, f.drow == 0, f.dcol == 0), \
        ops.all(_fits(ops, f.aaddr, f.rows, cfg.act_depth),
                f.waddr + stream_weight_words(p, f.rows, ops) <= cfg.wgt_depth,
                f.accaddr + f.mrows <= cfg.acc_depth)


def _activate(f, p, cfg, ops):
    ew = f.ew == 1
    sources = ops.select(ew, ops.all(_fits(ops, f.xaddr, f.rows, cfg.act_depth), f.yaddr + f.rows <= cfg.act_depth),
                         _fits(ops, f.accaddr, f.rows, cfg.acc_depth))
    return True, ops.select(ew, f.accaddr == 0, ops.all(f.xaddr == 0, f.yaddr == 0)), \
        ops.all(sources, ops.any(f.dest == 1, f.aaddr + f.rows <= cfg.act_depth))


def _no_fields(f, p, cfg, ops):
    return True, True, True


_RULES = {Opcode.CONFIG: _config, Opcode.LOAD: _buffer(Buf.WGT), Opcode.LOAD_LUT: _no_fields,
          Opcode.LOAD_BIAS: _no_fields, Opcode.PRELOAD: _preload, Opcode.COMPUTE: _compute_ws,
          Opcode.ACTIVATE: _activate, Opcode.STORE: _buffer(Buf.ACC), Opcode.COUNTERS: _no_fields,
          Opcode.FENCE: _no_fields, Opcode.LOAD_QUANT: _no_fields}
#: Output-stationary: COMPUTE streams weights too, and PRELOAD is an illegal opcode.
_RULES_OS = {**{op: r for op, r in _RULES.items() if op != Opcode.PRELOAD}, Opcode.COMPUTE: _compute_os}


def rules(config: NpuConfig) -> dict:
    """``{opcode: rule}`` for the opcodes the configuration implements."""
    return _RULES_OS if config.dataflow == "os" else _RULES


def check(cmd: Command, config: NpuConfig, precision: Precision) -> ErrorCode:
    """The error code of a well-formed ``Command`` (an opcode of the configuration, no reserved bits)."""
    precision_ok, field_ok, range_ok = rules(config)[cmd.op](cmd, precision, config, PY_OPS)
    if not precision_ok:
        return ErrorCode.BAD_PRECISION
    if not field_ok:
        return ErrorCode.BAD_FIELD
    if not range_ok:
        return ErrorCode.BAD_RANGE
    return ErrorCode.OK


def validate(command: Command | int, config: NpuConfig, precision: Precision,
             cache: dict | None = None) -> tuple[ErrorCode, Command | None]:
    """Check one command against the configuration; ``(ErrorCode.OK, cmd)`` if it may run. A raw word
    is decoded first, as the hardware does; a ``Command`` is well-formed by construction, so only its
    opcode and rule are checked. ``cache``: a dict the caller keeps for one configuration, remembering
    each distinct (command, precision) (the check is a pure function of them)."""
    if cache is not None:
        key = (command, precision)
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = validate(command, config, precision)
        return hit
    if isinstance(command, Command):
        cmd = command
        if cmd.op not in rules(config):
            return ErrorCode.BAD_OPCODE, None
    else:
        if (command & 0xF) not in rules(config):
            return ErrorCode.BAD_OPCODE, None
        try:
            cmd = decode(command)
        except DecodeError:
            return ErrorCode.BAD_FIELD, None
    code = check(cmd, config, precision)
    return code, cmd if code == ErrorCode.OK else None
