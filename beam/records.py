"""Normalised row types every reader produces, and the dead-letter record.

Why tuples: 10M+ events cross Beam shuffles; a NamedTuple of plain values
packs into a few dozen bytes (`pack`) while staying readable.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import NamedTuple

from apache_beam import coders

# Beam's fast primitive coder: plain (nested) tuples, str, int, float, bool.
_PLAIN = coders.FastPrimitivesCoder()


class Event(NamedTuple):
    """One engagement. `(file_index, line)` is its position in the input."""

    user_id: str
    item_id: str
    timestamp: int
    negative: bool
    source_topic: str
    file_index: int
    line: int


class Item(NamedTuple):
    """One item with its features. Missing features make it invalid, not bad."""

    item_id: str
    topics: tuple[str, ...]
    content: tuple[float, ...]
    categorical: tuple[tuple[str, str], ...]
    features_valid: bool
    file_index: int
    line: int


class Follow(NamedTuple):
    user_id: str
    topic: str
    file_index: int
    line: int


def pack(record: tuple) -> bytes:
    """A record (`Event`, `Item`, `Follow`: plain values and plain tuples) as
    bytes for a shuffle; `unpack` reverses it."""
    # A NamedTuple itself would go to the coder's pickle fallback.
    return _PLAIN.encode(tuple(record))


def unpack(data: bytes) -> tuple:
    """The fields `pack` packed; the record is `Item(*fields)` etc."""
    return _PLAIN.decode(data)


def pack_many(value: list) -> bytes:
    """Many records as one bytes value; `unpack_many` reverses it.

    `value` is a list of plain values: str, int, float, bool, bytes and
    (nested) lists and tuples of them; a record goes in as `tuple(record)`
    (a NamedTuple would go to the coder's pickle fallback, ~2x the bytes).

    Why: what crosses a shuffle or waits between stages is held by the
    runner. 10M events as 10M values cost the local runner's process ~100
    bytes each in object overhead alone, and as pickled NamedTuples ~90
    bytes each where plain tuples take ~50. docs/benchmarks.md has the
    prepare pipeline's peak memory before and after
    (`python -m benchmarks.prepare`).
    """
    return _PLAIN.encode(value)


def unpack_many(data: bytes) -> list:
    """The list that `pack_many` packed, in order."""
    return _PLAIN.decode(data)


class BadRow(Exception):
    """A row that cannot be used; `reason` is a stable machine-readable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def dead_letter(kind: str, path: str, line: int, reason: str, detail: str, raw) -> dict:
    """The dead-letter record: which file/line, why, and the raw row."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="backslashreplace")
    elif not isinstance(raw, str):
        raw = json.dumps(raw, default=str, sort_keys=True)
    return {
        "kind": kind,
        "file": path,
        "line": line,
        "reason": reason,
        "detail": detail,
        "raw": raw[:1000],
    }


# Timestamps are int64 seconds through the pipeline and float64 in the cutoff
# quantile: beyond 2**53 neither is exact, and beyond 2**63 int64 overflows.
MAX_ABS_TIMESTAMP = 2**53
# Unix seconds outside [1970-01-01, 2100-01-01) are kept but counted and warned
# about: timestamps are only compared with each other and the cutoff, so a log
# of positions or of milliseconds still splits, but it is usually a mistake.
PLAUSIBLE_TIMESTAMPS = (0, 4_102_444_800)
TIMESTAMP_FORMATS = "expected unix seconds or ISO-8601"


def _whole_seconds(number, shown) -> int:
    if not math.isfinite(number):
        raise BadRow("bad_timestamp", f"timestamp {shown!r}: not a finite number; {TIMESTAMP_FORMATS}")
    if abs(number) >= MAX_ABS_TIMESTAMP:
        raise BadRow("bad_timestamp", f"timestamp {shown!r}: out of range (|t| < 2**53 seconds); "
                                      f"{TIMESTAMP_FORMATS}")
    return int(number)


def parse_timestamp(value) -> int:
    """Unix seconds (int/float/str) or ISO-8601 (naive = UTC) to int seconds.

    Raises:
      BadRow: `bad_timestamp` naming the value and the accepted formats (also
        for `inf`, `nan` and values of 2**53 seconds or more, which no int64
        or float64 stage could hold exactly); `wrong_type` for a list or
        object; `missing_field` for an empty string.
    """
    if isinstance(value, bool):
        raise BadRow("bad_timestamp", f"timestamp {value!r}: {TIMESTAMP_FORMATS}")
    if isinstance(value, (int, float)):
        return _whole_seconds(value, value)
    if isinstance(value, datetime.datetime):
        text = value.isoformat()
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise BadRow("wrong_type", f"timestamp: expected a string or number, got {_shown(value)}")
    if not text:
        raise BadRow("missing_field", "timestamp is empty")
    try:
        return _whole_seconds(int(text), text)  # exact for integer strings of any length
    except ValueError:
        pass
    try:
        return _whole_seconds(float(text), text)
    except ValueError:
        pass
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRow("bad_timestamp", f"timestamp {text!r}: {TIMESTAMP_FORMATS}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return int(parsed.timestamp())


def plausible_timestamp(seconds: int) -> bool:
    """Whether unix seconds fall in [1970-01-01, 2100-01-01) (see PLAUSIBLE_TIMESTAMPS)."""
    return PLAUSIBLE_TIMESTAMPS[0] <= seconds < PLAUSIBLE_TIMESTAMPS[1]


def _shown(value) -> str:
    text = json.dumps(value, default=str)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def text_value(row: dict, field: str) -> str:
    """An optional string cell: "" when absent; ids may be JSON integers.

    Raises:
      BadRow: `wrong_type` for a list, object, float or boolean (a JSONL or
        Parquet value that stringifying would turn into a wrong id).
    """
    value = row.get(field)
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadRow("wrong_type", f"{field}: expected a string or integer, got {_shown(value)}")


def required(row: dict, field: str) -> str:
    """A required string cell (see `text_value`); empty is `missing_field`."""
    value = text_value(row, field)
    if not value:
        raise BadRow("missing_field", f"{field} is missing or empty")
    return value
