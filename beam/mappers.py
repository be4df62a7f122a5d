"""Row mappers for the generic input format (SPEC §4).

A mapper turns one row dict into an `Event`, `Item` or `Follow`, or raises
`BadRow` with a reason code. They are plain functions (bound with
`functools.partial`) so they pickle to any Beam worker.
"""

from __future__ import annotations

import math

from beam.records import BadRow, Event, Follow, Item, parse_timestamp, required, text_value

# Columns every file of a kind must have (CSV/TSV header, Parquet schema).
EVENT_COLUMNS = ("user_id", "item_id", "timestamp")
ITEM_COLUMNS = ("item_id",)
FOLLOW_COLUMNS = ("user_id", "topic")


def split_list(value, field: str = "topics") -> tuple[str, ...]:
    """`a|b` strings or lists to a tuple of non-empty stripped strings.

    Raises:
      BadRow: `wrong_type` for an object, or a list holding anything but
        strings and integers.
    """
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(p for p in (text_value({field: x}, field) for x in value) if p)
    if isinstance(value, dict):
        text_value({field: value}, field)  # raises wrong_type
    return tuple(p for p in (x.strip() for x in str(value).split("|")) if p)


def _float(value, field: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRow("bad_number", f"{field}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise BadRow("bad_number", f"{field}={value!r} is not finite")
    return number


def event_from_row(row: dict, file_index: int, line: int, negative_actions: tuple[str, ...]) -> Event:
    """Generic event: user_id, item_id, timestamp, optional action/source_topic."""
    action = text_value(row, "action") or "engage"
    timestamp = row.get("timestamp")
    if timestamp is None or (isinstance(timestamp, str) and not timestamp.strip()):
        raise BadRow("missing_field", "timestamp is missing or empty")
    return Event(
        user_id=required(row, "user_id"),
        item_id=required(row, "item_id"),
        timestamp=parse_timestamp(timestamp),
        negative=action in negative_actions,
        source_topic=text_value(row, "source_topic"),
        file_index=file_index,
        line=line,
    )


def item_from_row(
    row: dict,
    file_index: int,
    line: int,
    vector_column: str,
    vector_dim: int,
    numeric_columns: tuple[str, ...],
    categorical_columns: tuple[str, ...],
) -> Item:
    """Generic item. Missing feature values make the item invalid (eq. 6);
    values that are present but malformed make the row bad."""
    valid = True
    content: list[float] = []
    if vector_dim:
        raw = row.get(vector_column)
        if isinstance(raw, dict):
            raise BadRow("wrong_type", f"{vector_column}: expected {vector_dim} numbers, got an object")
        values = raw if isinstance(raw, (list, tuple)) else str(raw or "").split()
        if not values:
            valid = False
            content = [0.0] * vector_dim
        elif len(values) != vector_dim:
            raise BadRow(
                "bad_vector", f"{vector_column} has {len(values)} values, expected {vector_dim}"
            )
        else:
            content = [_float(v, vector_column) for v in values]
    for column in numeric_columns:
        raw = row.get(column)
        if raw is None or str(raw).strip() == "":
            valid = False
            content.append(0.0)
        else:
            content.append(_float(raw, column))
    categorical = []
    for column in categorical_columns:
        value = text_value(row, column)
        valid = valid and bool(value)
        categorical.append((column, value))
    return Item(
        item_id=required(row, "item_id"),
        topics=split_list(row.get("topics")),
        content=tuple(content),
        categorical=tuple(categorical),
        features_valid=valid,
        file_index=file_index,
        line=line,
    )


def follow_from_row(row: dict, file_index: int, line: int) -> Follow:
    return Follow(required(row, "user_id"), required(row, "topic"), file_index, line)
