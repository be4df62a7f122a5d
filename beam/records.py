"""Normalised row types every reader produces, and the dead-letter record.

Why tuples: 10M+ events cross Beam shuffles; NamedTuples pickle small and
fast while staying readable.
"""

from __future__ import annotations

import datetime
import json
from typing import NamedTuple


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


def parse_timestamp(value) -> int:
    """Unix seconds (int/float/str) or ISO-8601 (naive = UTC) to int seconds.

    Raises:
      BadRow: `bad_timestamp` naming the value and the accepted formats.
    """
    if isinstance(value, bool):
        raise BadRow("bad_timestamp", f"timestamp {value!r}: expected unix seconds or ISO-8601")
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    if not text:
        raise BadRow("missing_field", "timestamp is empty")
    try:
        return int(float(text))
    except ValueError:
        pass
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRow(
            "bad_timestamp", f"timestamp {text!r}: expected unix seconds or ISO-8601"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return int(parsed.timestamp())


def required(row: dict, field: str) -> str:
    value = row.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadRow("missing_field", f"{field} is missing or empty")
    return str(value).strip()
