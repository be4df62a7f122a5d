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

from common.protowire import varint
from common.topic_index import topic_pairs

# RetrieveResponse.candidates = 1; Candidate: item_id = 1, score = 2,
# retriever = 3, embedding = 4, condition_topic = 5, item_topics = 6.
_LEN, _I32, _VARINT = 2, 5, 0
_RESPONSE_CANDIDATES = 1
_ITEM_ID, _SCORE, _RETRIEVER, _EMBEDDING, _CONDITION_TOPIC, _ITEM_TOPICS = 1, 2, 3, 4, 5, 6


def _tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def string_field(number: int, value: str) -> bytes:
    """A length-delimited string field (empty strings are omitted, as proto3 does)."""
    if not value:
        return b""
    data = value.encode("utf-8")
    return _tag(number, _LEN) + varint(len(data)) + data


def _encode_rows(item_ids: list[str], topics: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """`ItemFields` of a chunk of rows: (bytes as uint8, each row's length)."""
    n = len(item_ids)
    if any("\n" in i for i in item_ids):
        raise ValueError("item ids must not contain line breaks")
    id_bytes = np.frombuffer("\n".join(item_ids).encode("utf-8"), np.uint8)
    breaks = np.flatnonzero(id_bytes == 10)
    id_start = np.concatenate([[0], breaks + 1]).astype(np.int64)[:n]
    id_len = np.concatenate([breaks, [len(id_bytes)]]).astype(np.int64)[:n] - id_start
    # (row, topic) pairs in row order, each topic's field encoded once.
    distinct, pair_code, row_of_pair, per_row = topic_pairs(topics)
    table = [string_field(_ITEM_TOPICS, t) for t in distinct]
    table_len = np.array([len(b) for b in table], np.int64)
    pair_len = table_len[pair_code]
    topics_len = np.bincount(row_of_pair, pair_len, n).astype(np.int64)
    head = np.where(id_len > 0, 1 + _varint_size(id_len), 0)  # proto3 omits an empty id
    row_len = head + id_len + topics_len
    at, has_id = np.cumsum(row_len) - row_len, id_len > 0
    out = np.empty(int(row_len.sum()), np.uint8)
    out[at[has_id]] = _tag(_ITEM_ID, _LEN)[0]
    _put_varints(out, at[has_id] + 1, id_len[has_id])
    out[_ragged(at + head, id_len)] = id_bytes[_ragged(id_start, id_len)]
    before = np.cumsum(pair_len) - pair_len  # topic bytes before each pair, all rows
    first_pair = np.cumsum(per_row) - per_row
    within = before - before[first_pair[row_of_pair]] if len(pair_len) else before
    dst = (at + head + id_len)[row_of_pair] + within
    table_start = np.cumsum(table_len) - table_len
    out[_ragged(dst, pair_len)] = np.frombuffer(b"".join(table), np.uint8)[_ragged(table_start[pair_code],
                                                                                   pair_len)]
    return out, row_len


class ItemFields:
    """`item_id` + `item_topics` of every index row, encoded once.

    Args:
      item_ids: row -> item id.
      topics: row -> the item's topics.
    """

    CHUNK = 65_536  # rows encoded per step (bounds the temporary index arrays)

    def __init__(self, item_ids: list[str], topics: list[list[str]]):
        # Array operations, not a loop over rows: an index loads while the
        # service answers, and 1M rows in a Python loop held the GIL ~3 s.
        chunks, lengths = [], [np.zeros(1, np.int64)]
        for lo in range(0, len(item_ids), self.CHUNK):
            data, row_len = _encode_rows(item_ids[lo:lo + self.CHUNK], topics[lo:lo + self.CHUNK])
            chunks.append(data)
            lengths.append(row_len)
        self.offsets = np.cumsum(np.concatenate(lengths))
        self.blob = b"".join(c.tobytes() for c in chunks)
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


def _varint_size(values: np.ndarray) -> np.ndarray:
    """Bytes of each value's varint (values < 2**28)."""
    if len(values) and values.max() >= 1 << 28:
        raise ValueError(f"a field of {int(values.max())} bytes; at most {(1 << 28) - 1}")
    return 1 + (values >= 1 << 7) + (values >= 1 << 14) + (values >= 1 << 21)


def _put_varints(out: np.ndarray, at: np.ndarray, values: np.ndarray) -> None:
    """Writes each value's varint at `out[at[i]:]`."""
    size = _varint_size(values)
    for k in range(4):
        more = size > k
        out[at[more] + k] = ((values[more] >> (7 * k)) & 0x7F) | np.where(size[more] > k + 1, 0x80, 0)


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
    size_bytes = _varint_size(body)
    total = 1 + size_bytes + body
    at = np.cumsum(total) - total  # where each candidate starts
    out = np.empty(int(total.sum()), np.uint8)
    out[at] = _tag(_RESPONSE_CANDIDATES, _LEN)[0]
    _put_varints(out, at + 1, body)
    item_at = at + 1 + size_bytes
    for t, fields in enumerate(item_fields):
        mine = table == t
        out[_ragged(item_at[mine], item_len[mine])] = fields.array[_ragged(item_start[mine], item_len[mine])]
    score_at = item_at + item_len
    out[score_at] = _tag(_SCORE, _I32)[0]
    out[score_at[:, None] + np.arange(1, 5)] = np.asarray(scores, "<f4").view(np.uint8).reshape(n, 4)
    out[_ragged(score_at + 5, source_len)] = source_blob[_ragged(source_start, source_len)]
    return out.tobytes()
