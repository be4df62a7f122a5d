"""Protobuf wire-format pieces shared by the TFRecord writers (`trainer/features.py`)
and the retrieval service's responses (`serving/wire.py`); both are
tested against the protobuf implementation."""

from __future__ import annotations


def _varint_slow(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64: ten bytes of two's complement, as protobuf
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = tuple(_varint_slow(n) for n in range(1 << 14))


def varint(value: int) -> bytes:
    """Base-128 varint of an int64 (small values from a table)."""
    if 0 <= value < 16384:
        return _SMALL_VARINTS[value]
    return _varint_slow(value)
