"""Per-topic indexes (`common/topic_index.py`): membership, restricted
search against exact search over the topic's items, save/load, recall."""

from __future__ import annotations

import os

import numpy as np
import pytest

from common import item_index as ii
from common.topic_index import build_topic_indexes, topic_members, topic_recall


def corpus(n=3000, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(64, d))  # clustered, as item embeddings are
    embeddings = (centers[rng.integers(0, 64, n)] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    topics = [[f"t{i % 3}"] + (["even"] if i % 2 == 0 else []) + (["rare"] if i % 500 == 0 else [])
              for i in range(n)]
    return embeddings, [f"i{i}" for i in range(n)], topics, rng


def test_topic_members_are_ascending_unique_rows():
    topics = [["a", "b"], [], ["b", "b"], ["a"], ["c", "a"]]
    got = topic_members(topics)
    want = {}
    for row, ts in enumerate(topics):
        for t in ts:
            want.setdefault(t, set()).add(row)
    assert set(got) == set(want)
    for t, rows in got.items():
        assert rows.tolist() == sorted(want[t]), t
    assert topic_members([[], []]) == {}


def test_only_large_topics_get_an_index_and_search_stays_inside_the_topic():
    embeddings, ids, topics, rng = corpus()
    index = ii.build_index(embeddings, ids, topics, ii.IndexConfig(topic_index_min_items=1000))
    sizes = {t: len(r) for t, r in topic_members(topics).items()}
    assert set(index.topic_indexes) == {t for t, s in sizes.items() if s >= 1000} == {"t0", "t1", "t2", "even"}
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    for topic, sub in index.topic_indexes.items():
        assert sub.config.kind == "brute_force"  # resolved for the topic's size (< 20k)
        rows, scores = sub.search(queries, 50)
        members = topic_members(topics)[topic]
        exact, exact_scores = ii.exact_search(embeddings[members], queries, 50)
        np.testing.assert_array_equal(rows, members[exact])
        np.testing.assert_allclose(scores, exact_scores, rtol=1e-5, atol=1e-5)
        assert all(topic in topics[r] for r in rows.ravel())
    # More than the topic has: padded with -1 / -inf.
    rows, scores = index.topic_indexes["t0"].search(queries[:1], 1500)
    assert (rows[0, 1000:] == -1).all() and np.isneginf(scores[0, 1000:]).all()


def test_tree_topic_indexes_recall_and_round_trip(tmp_path):
    embeddings, ids, topics, rng = corpus(n=50_000, d=16)
    cfg = ii.IndexConfig(brute_force_max_items=10_000, topic_index_min_items=20_000)
    index = ii.build_index(embeddings, ids, topics, cfg)
    assert set(index.topic_indexes) == {"even"} and index.topic_indexes["even"].config.kind == "tree_ah"
    queries = embeddings[rng.choice(len(embeddings), 100)] + 0.1 * rng.normal(size=(100, 16)).astype(np.float32)
    recall = topic_recall(index.topic_indexes, embeddings, queries, 100)
    assert recall["topics"] == 1 and recall["recall"] >= 0.9, recall
    saved = ii.save(index, str(tmp_path / "1"))
    loaded = ii.load_index(saved)
    assert set(loaded.topic_indexes) == {"even"}
    np.testing.assert_array_equal(loaded.topic_indexes["even"].rows, index.topic_indexes["even"].rows)
    a = index.topic_indexes["even"].search(queries, 20)
    b = loaded.topic_indexes["even"].search(queries, 20)
    np.testing.assert_array_equal(a[0], b[0])


def test_no_topic_indexes_by_default_and_a_broken_one_is_named(tmp_path):
    embeddings, ids, topics, _ = corpus()
    plain = ii.build_index(embeddings, ids, topics)
    assert plain.topic_indexes == {}
    assert ii.load_index(ii.save(plain, str(tmp_path / "1"))).topic_indexes == {}
    with_topics = ii.build_index(embeddings, ids, topics, ii.IndexConfig(topic_index_min_items=1000))
    saved = ii.save(with_topics, str(tmp_path / "2"))
    rows = os.path.join(saved, "topics", "00000", "rows.npy")
    os.remove(rows)
    with pytest.raises(FileNotFoundError, match="rows.npy"):
        ii.load_index(saved)


def test_retriever_config_gives_explicit_topic_indexes_unless_set():
    assert ii.retriever_config("implicit").topic_index_min_items is None
    assert ii.retriever_config("explicit").topic_index_min_items == ii.IndexConfig().brute_force_max_items
    assert ii.retriever_config("explicit", ii.IndexConfig(topic_index_min_items=0)).topic_index_min_items == 0
    with pytest.raises(ValueError, match="topic_index_min_items"):
        ii.resolve_config(10, ii.IndexConfig(topic_index_min_items=-1))


def test_build_topic_indexes_directly():
    embeddings, _, topics, _ = corpus()
    out = build_topic_indexes(embeddings, topics, ii.IndexConfig(), 1500)
    assert set(out) == {"even"} and len(out["even"].rows) == 1500


def test_corpus_tree_sizes_are_not_forced_on_topic_indexes():
    """`--set leaves_to_search=200` fits the corpus, not a small topic."""
    embeddings, ids, topics, _ = corpus(n=50_000, d=16)
    cfg = ii.IndexConfig(kind="tree_ah", num_leaves=400, leaves_to_search=200, topic_index_min_items=20_000)
    index = ii.build_index(embeddings, ids, topics, cfg)
    sub = index.topic_indexes["even"].config
    assert index.config.leaves_to_search == 200 and sub.num_leaves == 158 and sub.leaves_to_search == 30


def test_a_topics_directory_without_its_manifest_is_refused(tmp_path):
    embeddings, ids, topics, _ = corpus()
    saved = ii.save(ii.build_index(embeddings, ids, topics, ii.IndexConfig(topic_index_min_items=1000)),
                    str(tmp_path / "1"))
    os.remove(os.path.join(saved, "topics", "topics.json"))
    with pytest.raises(FileNotFoundError, match="topics.json"):
        ii.load_index(saved)
