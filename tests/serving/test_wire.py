"""Responses written as wire bytes (`serving/wire.py`) parse to exactly the
message the protobuf implementation builds from the same fields."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.internal import encoder

from serving import wire
from serving.protos import retrieval_pb2 as pb


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16_383, 16_384, 2**31 - 1, 2**40])
def test_varint_matches_protobuf(value):
    assert wire.varint(value) == encoder._VarintBytes(value)


def test_negative_varint_is_ten_bytes_as_protobuf_int64():
    assert wire.varint(-1) == encoder._VarintBytes(2**64 - 1) and len(wire.varint(-1)) == 10


def test_candidates_parse_to_the_protobuf_message():
    rng = np.random.default_rng(0)
    ids = ["a", "ünïcode-ïd", "x" * 200, "item/42", "z" * 127, "y" * 128, "w" * 20_000]
    topics = [["t1", "t2"], [], ["tøpic"], ["t" * 300], ["t1"], ["a", "b", "c"], ["t1"]]
    # Two indexes (the retrievers') with other rows for the same items.
    tables = [wire.ItemFields(ids, topics), wire.ItemFields(ids[::-1], topics[::-1])]
    assert len(tables[0]) == len(ids)
    sources = [("implicit", 0, ""), ("implicit", 6, ""), ("explicit", 300, "tøpic"), ("explicit", 1, "t1")]
    order = rng.integers(0, len(ids), 60)  # item numbers (= rows of table 0)
    which = rng.integers(0, len(sources), 60)
    table = rng.integers(0, 2, 60)
    rows = np.where(table == 0, order, len(ids) - 1 - order)
    scores = rng.normal(size=60).astype(np.float32)
    scores[:3] = [0.0, -0.0, np.float32(1e-30)]
    encoded = wire.candidates(tables, table, rows, scores, [wire.source_fields(*s) for s in sources], which)
    assert encoded == b"".join(wire.candidates(tables, table[i:i + 1], rows[i:i + 1], scores[i:i + 1],
                                               [wire.source_fields(*s) for s in sources], which[i:i + 1])
                               for i in range(60))
    header = pb.RetrieveResponse(sampled_topics=["t1"], merge_policy="round_robin", unknown_items=2)
    header.versions["implicit"] = 3
    header.stage_ms["total"] = 1.5
    got = pb.RetrieveResponse.FromString(header.SerializeToString() + encoded)
    want = pb.RetrieveResponse()
    want.CopyFrom(header)
    for r, j, s in zip(order, which, scores):
        retriever, embedding, topic = sources[j]
        want.candidates.add(item_id=ids[r], score=s, retriever=retriever, embedding=embedding,
                            condition_topic=topic, item_topics=topics[r])
    assert got == want
    assert [c.item_id for c in got.candidates] == [ids[r] for r in order]  # order kept


def test_no_candidates_is_an_empty_field():
    empty = wire.ItemFields([], [])
    assert len(empty) == 0
    assert wire.candidates([empty], np.zeros(0), np.zeros(0), np.zeros(0, np.float32), [], np.zeros(0)) == b""


def reference_item_fields(ids, topics) -> list[bytes]:
    """One protobuf `Candidate(item_id, item_topics)` per row, serialised."""
    return [pb.Candidate(item_id=i, item_topics=t).SerializeToString() for i, t in zip(ids, topics)]


@pytest.mark.parametrize("chunk", [7, 65_536])
def test_item_fields_equal_protobuf_per_row(chunk, monkeypatch):
    monkeypatch.setattr(wire.ItemFields, "CHUNK", chunk)
    rng = np.random.default_rng(1)
    pool = ["t1", "tøpic", "t" * 200, "a"]
    ids = [f"item-{i}" for i in range(300)] + ["ünï", "x" * 130, "y" * 20_000, ""]
    topics = [list(rng.choice(pool, rng.integers(0, 4))) for _ in ids]
    fields = wire.ItemFields(ids, topics)
    assert [fields.row(r) for r in range(len(ids))] == reference_item_fields(ids, topics)
    with pytest.raises(ValueError, match="line breaks"):
        wire.ItemFields(["a\nb"], [[]])
