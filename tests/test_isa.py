"""The 128-bit command format: round trips, field placement, range checks and decoding of garbage."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from opennpu.golden.isa import (COMMAND_BITS, FIELDS, ActFn, Buf, Command, DecodeError, Opcode, decode,
                                decode_program, encode, encode_program)

from programs import ILLEGAL_OPCODES

WORD_MAX = (1 << COMMAND_BITS) - 1
FIELD_CASES = [(op, f) for op in Opcode for f in FIELDS[op]]


def _id(case):
    op, f = case
    return f"{op.name}.{f.name}"


def used_mask(op) -> int:
    mask = 0xF
    for f in FIELDS[op]:
        mask |= ((1 << f.width) - 1) << f.offset
    return mask


def command_strategy(op=None):
    ops = st.just(Opcode(op)) if op is not None else st.sampled_from(list(Opcode))

    def build(o):
        fields = {f.name: st.integers(f.lo, f.hi) for f in FIELDS[o]}
        return st.fixed_dictionaries(fields).map(lambda kw: Command(o, **kw))
    return ops.flatmap(build)


# -- table sanity -----------------------------------------------------------------------------
def test_field_table_is_consistent():
    assert set(FIELDS) == set(Opcode)
    for op, spec in FIELDS.items():
        seen = 0xF
        for f in spec:
            m = ((1 << f.width) - 1) << f.offset
            assert f.offset >= 4 and f.offset + f.width <= COMMAND_BITS, f
            assert not seen & m, f"{op.name}.{f.name} overlaps another field"
            seen |= m
        assert len({f.name for f in spec}) == len(spec)


# -- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("op", list(Opcode), ids=lambda o: o.name)
@pytest.mark.parametrize("where", ["min", "max", "zero"])
def test_round_trip_extremes(op, where):
    kw = {f.name: {"min": f.lo, "max": f.hi, "zero": 0}[where] for f in FIELDS[op]}
    cmd = Command(op, **kw)
    word = encode(cmd)
    assert 0 <= word <= WORD_MAX and word & 0xF == int(op)
    assert word & ~used_mask(op) == 0
    assert decode(word) == cmd and cmd.encode() == word
    assert cmd.fields == kw
    for name, value in kw.items():
        assert getattr(cmd, name) == value


@pytest.mark.parametrize("case", FIELD_CASES, ids=_id)
def test_field_placement(case):
    """Each field sits at offset:width, two's complement for signed fields, nothing else moves."""
    op, f = case
    mask = (1 << f.width) - 1
    for value in {f.lo, f.hi, 0, 1, -1 if f.signed else f.hi // 2}:
        cmd = Command(op, **{f.name: value})
        assert encode(cmd) == int(op) | ((value & mask) << f.offset)
        assert getattr(decode(encode(cmd)), f.name) == value
        others = [g for g in FIELDS[op] if g.name != f.name]
        assert all(getattr(cmd, g.name) == 0 for g in others)


@settings(max_examples=500)
@given(command_strategy())
def test_round_trip_random(cmd):
    word = encode(cmd)
    assert 0 <= word <= WORD_MAX
    back = decode(word)
    assert back == cmd and back.op == cmd.op and back.args == cmd.args
    assert hash(back) == hash(cmd)
    assert encode(back) == word


@pytest.mark.parametrize("op", list(Opcode), ids=lambda o: o.name)
@settings(max_examples=60)
@given(data=st.data())
def test_round_trip_random_per_opcode(op, data):
    cmd = data.draw(command_strategy(op))
    assert decode(encode(cmd)) == cmd


@settings(max_examples=100)
@given(st.lists(command_strategy(), max_size=20))
def test_program_round_trip(cmds):
    blob = encode_program(cmds)
    assert isinstance(blob, bytes) and len(blob) == 16 * len(cmds)
    for i, c in enumerate(cmds):
        assert int.from_bytes(blob[16 * i:16 * i + 16], "little") == encode(c)
    assert decode_program(blob) == cmds


def test_enum_and_bool_values_accepted():
    cmd = Command(Opcode.CONFIG, act=ActFn.LUT, qmin=-128, qmax=127, multiplier=1 << 30, shift=-5)
    assert cmd.act == 1 and decode(encode(cmd)) == cmd
    assert Command(Opcode.STORE, buf=Buf.ACC, addr=3, rows=1).buf == 2
    assert Command(Opcode.COMPUTE, accumulate=True).accumulate == 1
    assert Command(2, buf=1).op is Opcode.LOAD
    assert repr(Command(Opcode.LOAD, buf=1, addr=2, rows=3)) == "LOAD(buf=1, addr=2, rows=3)"


# -- encode-side validation ---------------------------------------------------------------------
@pytest.mark.parametrize("case", FIELD_CASES, ids=_id)
@pytest.mark.parametrize("side", ["below", "above"])
def test_out_of_range_rejected(case, side):
    op, f = case
    value = f.lo - 1 if side == "below" else f.hi + 1
    with pytest.raises(ValueError, match=rf"\b{f.name}\b"):
        Command(op, **{f.name: value})


@pytest.mark.parametrize("case", FIELD_CASES, ids=_id)
@pytest.mark.parametrize("bad", [1.0, "1", None, 1 << 200, -(1 << 200)])
def test_bad_value_types_rejected(case, bad):
    op, f = case
    with pytest.raises(ValueError, match=rf"\b{f.name}\b"):
        Command(op, **{f.name: bad})


@settings(max_examples=200)
@given(st.sampled_from(FIELD_CASES), st.data())
def test_out_of_range_random(case, data):
    op, f = case
    value = data.draw(st.one_of(st.integers(max_value=f.lo - 1), st.integers(min_value=f.hi + 1)))
    with pytest.raises(ValueError, match=rf"\b{f.name}\b"):
        Command(op, **{f.name: value})


def test_unknown_field_and_opcode_rejected():
    with pytest.raises(ValueError, match="bogus"):
        Command(Opcode.LOAD, bogus=1)
    with pytest.raises(ValueError, match="rows"):
        Command(Opcode.FENCE, rows=1)
    for op in ILLEGAL_OPCODES + [-1, 16]:
        with pytest.raises(ValueError):
            Command(op)
    with pytest.raises(AttributeError):
        Command(Opcode.FENCE).rows


# -- decoding garbage ----------------------------------------------------------------------------
@pytest.mark.parametrize("opcode", ILLEGAL_OPCODES)
def test_illegal_opcodes(opcode):
    for upper in (0, 1 << 4, WORD_MAX & ~0xF, 0xDEADBEEF << 40):
        with pytest.raises(DecodeError, match="opcode"):
            decode(upper | opcode)


@pytest.mark.parametrize("op", list(Opcode), ids=lambda o: o.name)
def test_every_reserved_bit_rejected(op):
    reserved = WORD_MAX & ~used_mask(op)
    assert reserved  # every opcode leaves reserved bits
    for bit in range(COMMAND_BITS):
        if reserved >> bit & 1:
            with pytest.raises(DecodeError, match="reserved"):
                decode(int(op) | (1 << bit))
        elif bit >= 4:
            assert decode(int(op) | (1 << bit)).op == op      # a field bit: legal


@pytest.mark.parametrize("word", [-1, -(1 << 127), 1 << COMMAND_BITS, (1 << 200) + 2, 1.0, 2.5, "0x2",
                                  None, b"\x02" * 16, [2]])
def test_bad_word_types(word):
    with pytest.raises(DecodeError):
        decode(word)


def test_decode_error_is_value_error():
    assert issubclass(DecodeError, ValueError)


legal_words = command_strategy().map(encode)
words = st.one_of(
    st.integers(0, WORD_MAX),
    legal_words,
    st.tuples(legal_words, st.integers(0, COMMAND_BITS - 1)).map(lambda t: t[0] | (1 << t[1])),
    st.tuples(legal_words, st.integers(0, 15)).map(lambda t: (t[0] & ~0xF) | t[1]),
)


@settings(max_examples=1000)
@given(words)
def test_decode_total(word):
    """decode returns a Command that re-encodes to the same word, or raises DecodeError -- nothing else."""
    try:
        cmd = decode(word)
    except DecodeError:
        return
    assert isinstance(cmd, Command)
    assert encode(cmd) == word


@settings(max_examples=200)
@given(st.integers())
def test_decode_total_any_int(word):
    try:
        cmd = decode(word)
    except DecodeError:
        assert not (0 <= word <= WORD_MAX) or (word & 0xF) in ILLEGAL_OPCODES \
            or word & ~used_mask(word & 0xF)
        return
    assert encode(cmd) == word


def test_decode_program_errors():
    good = encode_program([Command(Opcode.FENCE), Command(Opcode.COUNTERS)])
    assert decode_program(b"") == []
    with pytest.raises(DecodeError):
        decode_program(good + b"\x00")
    with pytest.raises(DecodeError):
        decode_program(good[:-1])
    with pytest.raises(DecodeError):
        decode_program(good + bytes(16))                 # opcode 0
    with pytest.raises(DecodeError):
        decode_program(good + (0xA | 1 << 127).to_bytes(16, "little"))   # FENCE with a reserved bit


@settings(max_examples=200)
@given(st.binary(max_size=100))
def test_decode_program_total(blob):
    try:
        cmds = decode_program(blob)
    except DecodeError:
        return
    assert encode_program(cmds) == blob
