"""`load_item_table` against a plain-Python reference on a hand-written table."""

from __future__ import annotations

import json

import numpy as np

from trainer import features
from trainer.item_table import load_item_table
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

    n = len(items) + 1  # row 0 = padding / unknown item
    assert table.ids == [it["id"] for it in items]
    assert table.content.shape == (n, content_dim) and table.topic_ids.shape == (n, max_topics)
    assert not table.content[0].any() and not table.topic_ids[0].any() and table.train_count[0] == 0
    for r, it in enumerate(items, start=1):
        np.testing.assert_allclose(table.content[r], it["content"] or np.zeros(content_dim), rtol=1e-6)
        expected_topics = [TOPICS.index(t) + 1 for t in it["topics"][:max_topics]]
        assert table.topic_ids[r].tolist() == expected_topics + [0] * (max_topics - len(expected_topics))
        assert table.item_topics(r) == it["topics"][:max_topics]
        assert table.categorical_ids[r, 0] == {"red": 1, "green": 2}.get(it["color"], 0)
        assert table.valid[r] == int(it["valid"]) and table.train_count[r] == it["count"]
    assert table.categorical_sizes == [2] and table.topics == TOPICS
