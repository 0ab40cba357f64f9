# cython: boundscheck=False, wraparound=False
# (For the compiled build: `_sum_by_words`, the one function that indexes,
# stays inside `len(data)` by construction.)
"""RFC 1071 internet checksum.

Two ways to the same sum, each the fast one in one build (DESIGN.md
principle 3), chosen once by `ones_complement_sum`:
- interpreted, one big-integer reduction (`_sum_as_integer`): 2**16 is 1
  modulo 0xFFFF, so a buffer read as one big-endian integer is congruent to
  the sum of its 16-bit words; ~4x faster in CPython than a per-word loop;
- compiled, that per-word loop (`_sum_by_words`), which checksum.pxd makes
  a C loop over the buffer: ~10x faster than the big integer, which stays
  a Python object however the code around it is typed.
Both are tested against the same reference in both builds.
"""

from __future__ import annotations

from types import FunctionType

# Buffers accepted by int.from_bytes: bytes, bytearray or a byte memoryview.
Buffer = bytes | bytearray | memoryview


def ones_complement_sum(data: Buffer, initial: int = 0) -> int:
    """Fold `data` (big-endian 16-bit words) into a one's complement sum.

    `initial` is a partial sum from an earlier call (or `pseudo_header_sum`),
    so sums over several buffers combine; an odd-length `data` is padded with a
    zero byte, which makes only the last buffer of a chain allowed to be odd.

    Returns:
        The folded sum in 0..0xFFFF. It is 0 only when `data` and `initial`
        are all zero: end-around-carry addition of any non-zero word never
        yields +0, so a non-zero total that is a multiple of 0xFFFF maps to
        0xFFFF (-0), exactly as the word-by-word algorithm of RFC 1071 does.
    """
    if _COMPILED:
        return _sum_by_words(data, initial)
    return _sum_as_integer(data, initial)


def _sum_as_integer(data: Buffer, initial: int) -> int:
    total = int.from_bytes(data, "big")
    if len(data) & 1:
        total <<= 8
    total += initial
    # Reduced first, since compiled `_fold` takes a machine word; a non-zero
    # multiple of 0xFFFF must stay non-zero, and min() keeps it so.
    return _fold(total % 0xFFFF or min(total, 0xFFFF))


def _sum_by_words(data: Buffer, initial: int) -> int:
    total = initial
    last = len(data) - 1
    i = 0
    # Eight bytes a turn into two sums, high and low halves of the words:
    # independent additions the compiler can overlap (1460 bytes: 760 ns
    # one word a turn with bounds checks, 330 ns this way).
    high = 0
    low = 0
    while i < last - 6:
        high += data[i] + data[i + 2] + data[i + 4] + data[i + 6]
        low += data[i + 1] + data[i + 3] + data[i + 5] + data[i + 7]
        i += 8
    total += (high << 8) + low
    while i < last:
        total += data[i] << 8 | data[i + 1]
        i += 2
    if i == last:  # odd length: the last byte is the high half of a word
        total += data[last] << 8
    return _fold(total)


def _fold(total: int) -> int:
    folded = total % 0xFFFF
    if folded == 0 and total != 0:
        return 0xFFFF
    return folded


# Compiled, this module's functions are Cython's, not Python functions.
_COMPILED = not isinstance(_fold, FunctionType)


def internet_checksum(data: Buffer, initial: int = 0) -> int:
    """Compute the value to store in a checksum field (RFC 1071 §1).

    The checksum field inside `data` must be zero. A receiver verifies a
    message by checking `ones_complement_sum(message) == 0xFFFF` instead.

    Returns:
        The one's complement of the folded sum, in 0..0xFFFF.
    """
    return ~ones_complement_sum(data, initial) & 0xFFFF


def pseudo_header_sum(src_ip: int, dst_ip: int, protocol: int, length: int) -> int:
    """Sum of the TCP/UDP IPv4 pseudo-header (RFC 9293 §3.1, RFC 768).

    `length` is the transport header plus payload length in bytes. Pass the
    result as `initial` to `ones_complement_sum`/`internet_checksum`.

    Returns:
        The folded partial sum, in 0..0xFFFF.
    """
    total = (src_ip >> 16) + (src_ip & 0xFFFF) + (dst_ip >> 16) + (dst_ip & 0xFFFF)
    return _fold(total + protocol + length)


def checksum_adjust(checksum: int, old_word: int, new_word: int) -> int:
    """Update a stored checksum after one 16-bit word changed (RFC 1624 eqn. 3).

    HC' = ~(~HC + ~m + m') equals a full recomputation, with one exception
    RFC 1624 does not need for IP headers: when every word of the updated
    data (checksum field aside) is zero the result is 0, whereas only 0xFFFF
    verifies. A caller whose data can become all zero must recompute then.

    Returns:
        The new checksum field value, in 0..0xFFFF.
    """
    total = (~checksum & 0xFFFF) + (~old_word & 0xFFFF) + new_word
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
