"""Small helpers shared by the RTL units."""
from amaranth import Cat, Mux, Signal
from amaranth.lib import memory


__all__ = ["addr_bits", "read_port_signature", "write_port_signature", "delay_line", "weight_lane"]


def addr_bits(depth: int) -> int:
    """Address width of a memory with ``depth`` words."""
    return max(1, (depth - 1).bit_length())


def read_port_signature(depth: int, width: int):
    return memory.ReadPort.Signature(addr_width=addr_bits(depth), shape=width)


def write_port_signature(depth: int, width: int):
    return memory.WritePort.Signature(addr_width=addr_bits(depth), shape=width)


def delay_line(m, value, cycles, name):
    """``value`` delayed by ``cycles`` registers in the ``sync`` domain (``value`` itself for 0)."""
    for stage in range(cycles):
        reg = Signal.like(value, name=f"{name}_d{stage + 1}")
        m.d.sync += reg.eq(value)
        value = reg
    return value


def _nibble(byte_array, index):
    """Sign-extended int4 number ``index`` of packed bytes (low nibble first)."""
    return byte_array[index // 2][4 * (index % 2):4 * (index % 2) + 4].as_signed()


def weight_lane(word, col, *, a8w4, a4w4, high_row, high_pair):
    """Column ``col``'s weight byte from a weight SRAM word (``ArrayLayout(unsigned(8), cols)``).

    int8: byte ``col``. The int4 modes pack two K rows per word, row 2i in bytes ``[0, cols/2)`` and row
    2i+1 in ``[cols/2, cols)`` (low nibble first): a8w4 gives the sign-extended nibble of the row
    ``high_row`` selects; a4w4 gives both rows as one byte (row 2i low nibble, row 2i+1 high nibble,
    zero where ``high_pair`` is low). Needs an even number of columns for the int4 modes.
    """
    cols = len(word)
    if cols % 2:                     # int4 modes need even cols
        return word[col]
    low, high = _nibble(word[:cols // 2], col), _nibble(word[cols // 2:], col)
    return Mux(a4w4, Cat(low[:4], Mux(high_pair, high[:4], 0)),
               Mux(a8w4, Mux(high_row, high, low), word[col]))
