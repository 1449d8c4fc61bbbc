"""Hazard detection between the dispatcher's head command and the commands in flight.

Each command declares ``Access`` records (space, address range, read/write), the same records the cycle
model in ``golden/timing.py`` uses. A head command may dispatch only when none of its accesses
conflicts with an in-flight access of another unit: same space, overlapping range, at least one write.
"""
from amaranth import *
from amaranth.lib import data


__all__ = ["AccessLayout", "access", "conflict"]


class AccessLayout(data.Struct):
    """One access of a command: ``[lo, hi)`` in ``space``; ``valid`` = 0 for an unused slot."""
    valid: 1
    write: 1
    space: 3
    lo: 17
    hi: 17


def access(m, space, lo, count, write, valid=1):
    """A combinational ``AccessLayout`` signal for ``[lo, lo + count)`` in ``space`` (Values or ints)."""
    a = Signal(AccessLayout)
    m.d.comb += [a.valid.eq(valid), a.write.eq(write), a.space.eq(space), a.lo.eq(lo), a.hi.eq(lo + count)]
    return a


def conflict(x, y):
    """1 when accesses ``x`` and ``y`` (``AccessLayout`` views) collide."""
    return (x.valid & y.valid & (x.space == y.space) & (x.write | y.write)
            & (x.lo < y.hi) & (y.lo < x.hi))
