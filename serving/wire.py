"""Retrieve responses written directly as protobuf wire bytes.

A response carries ~1,000 candidates; building them as protobuf messages
costs ~7 ms per request in Python, more than the ANN searches. The parts of
a `Candidate` that only depend on the item (`item_id`, `item_topics`) are
encoded once per index row when the index loads (`ItemFields`); per request
only the score and the producing embedding are added, and the repeated
`candidates` field is appended to the serialised rest of the response
(protobuf parsers accept fields in any order and merge repeated fields, so
the result parses to exactly the message the fields describe).

Field numbers are those of `serving/protos/retrieval.proto`; the tests
compare against the protobuf implementation.
"""

from __future__ import annotations

import numpy as np

# RetrieveResponse.candidates = 1; Candidate: item_id = 1, score = 2,
# retriever = 3, embedding = 4, condition_topic = 5, item_topics = 6.
_LEN, _I32, _VARINT = 2, 5, 0
_RESPONSE_CANDIDATES = 1
_ITEM_ID, _SCORE, _RETRIEVER, _EMBEDDING, _CONDITION_TOPIC, _ITEM_TOPICS = 1, 2, 3, 4, 5, 6


def varint(value: int) -> bytes:
    """Unsigned base-128 varint."""
    if value < 0:
        raise ValueError(f"varint of {value}: only non-negative values are encoded here")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def string_field(number: int, value: str) -> bytes:
    """A length-delimited string field (empty strings are omitted, as proto3 does)."""
    if not value:
        return b""
    data = value.encode("utf-8")
    return _tag(number, _LEN) + varint(len(data)) + data


class ItemFields:
    """`item_id` + `item_topics` of every index row, encoded once.

    Args:
      item_ids: row -> item id.
      topics: row -> the item's topics.
    """

    def __init__(self, item_ids: list[str], topics: list[list[str]]):
        topic_field: dict[str, bytes] = {}  # few distinct topics: encode each once
        id_tag = _tag(_ITEM_ID, _LEN)
        short = [bytes((n,)) for n in range(128)]
        parts = []
        for item, row_topics in zip(item_ids, topics):
            data = item.encode("utf-8")
            size = short[len(data)] if len(data) < 128 else varint(len(data))
            encoded = [id_tag, size, data] if data else []
            for t in row_topics:
                field = topic_field.get(t)
                if field is None:
                    field = topic_field[t] = string_field(_ITEM_TOPICS, t)
                encoded.append(field)
            parts.append(b"".join(encoded))
        self.offsets = np.zeros(len(parts) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)), out=self.offsets[1:])
        self.blob = b"".join(parts)
        self.array = np.frombuffer(self.blob, np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, row: int) -> bytes:
        return self.blob[self.offsets[row]:self.offsets[row + 1]]


def source_fields(retriever: str, embedding: int, condition_topic: str) -> bytes:
    """The `Candidate` fields naming the embedding that produced it."""
    return (string_field(_RETRIEVER, retriever)
            + (_tag(_EMBEDDING, _VARINT) + varint(embedding) if embedding else b"")
            + string_field(_CONDITION_TOPIC, condition_topic))


def _ragged(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Positions `starts[i] + 0 .. lengths[i]-1`, concatenated."""
    ends = np.cumsum(lengths)
    return np.repeat(starts - ends + lengths, lengths) + np.arange(ends[-1] if len(ends) else 0)


def candidates(item_fields: list[ItemFields], table: np.ndarray, rows: np.ndarray, scores: np.ndarray,
               sources: list[bytes], source: np.ndarray) -> bytes:
    """The repeated `RetrieveResponse.candidates` field, in order, assembled
    with array operations (no per-candidate Python).

    Candidate i is row `rows[i]` of `item_fields[table[i]]` (item_id,
    item_topics), score `scores[i]` and the fields `sources[source[i]]`
    (`source_fields`): `[tag][varint length][item][score tag][4 bytes][source]`.
    """
    n = len(rows)
    if n == 0:
        return b""
    table, rows, source = (np.asarray(a, np.int64) for a in (table, rows, source))
    item_start, item_len = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for t, fields in enumerate(item_fields):
        mine = table == t
        item_start[mine] = fields.offsets[rows[mine]]
        item_len[mine] = fields.offsets[rows[mine] + 1] - item_start[mine]
    source_blob = np.frombuffer(b"".join(sources), np.uint8)
    source_offsets = np.concatenate([[0], np.cumsum([len(b) for b in sources])]).astype(np.int64)
    source_start, source_len = source_offsets[source], np.diff(source_offsets)[source]
    body = item_len + 5 + source_len
    if body.max() >= 1 << 28:
        raise ValueError(f"a candidate of {int(body.max())} bytes; at most {(1 << 28) - 1}")
    size_bytes = 1 + (body >= 1 << 7) + (body >= 1 << 14) + (body >= 1 << 21)
    total = 1 + size_bytes + body
    at = np.cumsum(total) - total  # where each candidate starts
    out = np.empty(int(total.sum()), np.uint8)
    out[at] = _tag(_RESPONSE_CANDIDATES, _LEN)[0]
    for k in range(4):  # the length varint, byte by byte
        more = size_bytes > k
        out[at[more] + 1 + k] = ((body[more] >> (7 * k)) & 0x7F) | np.where(size_bytes[more] > k + 1, 0x80, 0)
    item_at = at + 1 + size_bytes
    for t, fields in enumerate(item_fields):
        mine = table == t
        out[_ragged(item_at[mine], item_len[mine])] = fields.array[_ragged(item_start[mine], item_len[mine])]
    score_at = item_at + item_len
    out[score_at] = _tag(_SCORE, _I32)[0]
    out[score_at[:, None] + np.arange(1, 5)] = np.asarray(scores, "<f4").view(np.uint8).reshape(n, 4)
    out[_ragged(score_at + 5, source_len)] = source_blob[_ragged(source_start, source_len)]
    return out.tobytes()
