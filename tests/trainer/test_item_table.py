"""`load_item_table` against a plain-Python reference on a hand-written table."""

from __future__ import annotations

import json

import numpy as np

from trainer import features
from trainer.item_table import keep_rarest_topics, load_item_table
from trainer.layers._keras import tf

TOPICS = [f"t{i}" for i in range(9)]
COLORS = ["red", "green"]


def _write_table(root, items: list[dict], content_dim: int) -> None:
    """A prepared directory holding only what the item table reads."""
    (root / "vocab").mkdir(parents=True)
    (root / "items").mkdir()
    (root / features.MANIFEST).write_text(json.dumps(
        {"tables": {"categorical_columns": ["color"], "content_dim": content_dim}}))
    (root / features.VOCAB_ITEMS).write_text("".join(f"{it['id']}\n" for it in items))
    (root / features.VOCAB_TOPICS).write_text("".join(f"{t}\n" for t in TOPICS))
    (root / features.VOCAB_CATEGORICAL.format(name="color")).write_text("".join(f"{c}\n" for c in COLORS))
    # Two shards, rows in another order than the vocabulary.
    shuffled = items[::-1]
    for shard, part in enumerate((shuffled[::2], shuffled[1::2])):
        path = root / f"{features.ITEM_TABLE}-{shard:05d}-of-00002{features.TFRECORD_SUFFIX}"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for it in part:
                writer.write(features.encode_item(it["id"], it["topics"], it["content"], {"color": it["color"]},
                                                  it["valid"], it["count"]))


def test_matches_a_per_item_reference_across_batches_and_shards(tmp_path):
    rng = np.random.default_rng(0)
    content_dim, max_topics = 4, 3
    items = []
    for i in range(4100):  # > one 4096-record parse batch
        valid = i % 7 != 0
        items.append({
            "id": f"item{i}",
            "topics": list(rng.choice(TOPICS, size=int(rng.integers(0, 6)), replace=False)),  # 0..5 > max
            "content": rng.normal(size=content_dim).round(3).tolist() if valid else [],
            "color": ["red", "green", "mauve"][i % 3],  # "mauve": not in the vocabulary
            "valid": valid,
            "count": int(rng.integers(0, 50)),
        })
    _write_table(tmp_path, items, content_dim)

    table = load_item_table(str(tmp_path), max_topics=max_topics)

    # Reference: items that carry each topic; an item with more than
    # max_topics keeps its rarest (ties by its own order), in its own order.
    carried_by = {t: sum(t in it["topics"] for it in items) for t in TOPICS}

    def kept(topics):
        rarest = sorted(topics, key=lambda t: (carried_by[t], topics.index(t)))[:max_topics]
        return [t for t in topics if t in rarest]

    n = len(items) + 1  # row 0 = padding / unknown item
    assert table.ids == [it["id"] for it in items]
    assert table.content.shape == (n, content_dim) and table.topic_ids.shape == (n, max_topics)
    assert not table.content[0].any() and not table.topic_ids[0].any() and table.train_count[0] == 0
    for r, it in enumerate(items, start=1):
        np.testing.assert_allclose(table.content[r], it["content"] or np.zeros(content_dim), rtol=1e-6)
        expected_topics = [TOPICS.index(t) + 1 for t in kept(it["topics"])]
        assert table.topic_ids[r].tolist() == expected_topics + [0] * (max_topics - len(expected_topics))
        assert table.item_topics(r) == kept(it["topics"])
        assert table.categorical_ids[r, 0] == {"red": 1, "green": 2}.get(it["color"], 0)
        assert table.valid[r] == int(it["valid"]) and table.train_count[r] == it["count"]
    assert table.categorical_sizes == [2] and table.topics == TOPICS
    assert table.topics_truncated == sum(len(it["topics"]) > max_topics for it in items) > 0


def test_rarest_topics_are_kept_ties_by_the_items_order():
    # Items carrying each topic: 1 -> 4 items, 2 -> 3, 3 -> 1, 4 -> 1, 5 -> 2.
    items = [[1, 2, 3, 4, 5], [1, 2, 5], [1, 2], [1, 1]]
    kept, truncated = keep_rarest_topics(items, 2)
    # Item 0: 3 and 4 (one item each) beat 5 (two), 2 (three), 1 (four).
    # Item 1: 5 (two) then 2 (three), kept in the item's order: [2, 5].
    # Item 3: the duplicate counts once, so nothing is cut.
    assert kept == [[3, 4], [2, 5], [1, 2], [1]]
    assert truncated == 2
    # A tie keeps the item's earlier topic: 3 and 4 are both carried once.
    assert keep_rarest_topics(items, 1)[0][0] == [3]
