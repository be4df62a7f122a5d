"""`Retriever._search` on an explicit index in process: a topic index whose
tree search comes back short of the budget is replaced by the exact search
over the topic's items, so an explicit list never runs short."""

from __future__ import annotations

import concurrent.futures
import threading

import grpc
import numpy as np

from common import contract
from common import item_index as ii
from common.topic_index import TopicIndex, topic_members
from serving.indexes import LoadedIndex
from serving.retrieval import Retriever
from serving.retrieval_config import RetrievalConfig
from serving.wire import ItemFields


def loaded_index(embeddings, topics, topic_index):
    n = len(embeddings)
    index = ii.build_index(embeddings, [f"i{r}" for r in range(n)], topics)
    index.topic_indexes = topic_index
    return LoadedIndex(contract.EXPLICIT, 1, index, np.arange(n), topic_members(topics), frozenset({"a"}),
                       np.arange(n), embeddings, ItemFields(index.item_ids, topics))


def test_a_short_topic_index_list_falls_back_to_the_exact_search(tmp_path):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(4000, 8)).astype(np.float32)
    topics = [["a"] if r % 2 else ["b"] for r in range(4000)]
    rows = topic_members(topics)["a"]
    # A tree over the topic's 2,000 items searching 1 of 40 leaves: ~50 items.
    cfg = ii.resolve_config(len(rows), ii.IndexConfig(kind="tree_ah", num_leaves=40, leaves_to_search=1))
    tree = TopicIndex("a", rows, ii.build_searcher(np.ascontiguousarray(embeddings[rows]), cfg), cfg, 8)
    retriever = Retriever(RetrievalConfig(export_dir=str(tmp_path)), grpc.insecure_channel("127.0.0.1:1"))
    try:
        query = rng.normal(size=(1, 8)).astype(np.float32)
        short, _ = tree.search(query, 300)
        assert (short[0] >= 0).sum() < 300  # the premise: the tree alone is short
        found, scores, keep, how = retriever._search(loaded_index(embeddings, topics, {"a": tree}), query, 300,
                                                     ["a"], 300)
        assert how == ["exact_topic"] and keep.all() and (found >= 0).sum() == 300
        want, want_scores = ii.exact_search(embeddings[rows], query, 300)
        np.testing.assert_array_equal(found[0], rows[want[0]])
        # A topic index that is not short is used as it is.
        full = TopicIndex("a", rows, ii.build_searcher(np.ascontiguousarray(embeddings[rows]),
                                                       ii.resolve_config(len(rows), ii.IndexConfig())),
                          ii.resolve_config(len(rows), ii.IndexConfig()), 8)
        _, _, _, how = retriever._search(loaded_index(embeddings, topics, {"a": full}), query, 300, ["a"], 300)
        assert how == ["topic_index"]
    finally:
        retriever.close()


def test_the_exact_topic_search_keeps_each_topics_block_within_its_byte_budget(tmp_path):
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(3000, 8)).astype(np.float32)
    topics = [["a"] if r % 3 == 0 else ["b", "c"] if r % 3 == 1 else ["c"] for r in range(3000)]
    members = topic_members(topics)
    retriever = Retriever(RetrievalConfig(export_dir=str(tmp_path)), grpc.insecure_channel("127.0.0.1:1"))
    try:
        index = loaded_index(embeddings, topics, {})
        query = rng.normal(size=(1, 8)).astype(np.float32)
        for _ in range(2):  # the second request reads the kept blocks
            for topic in ("a", "b", "c"):
                found, scores, keep, how = retriever._search(index, query, 300, [topic], 300)
                want, want_scores = ii.exact_search(embeddings[members[topic]], query, 300)
                assert how == ["exact_topic"] and keep.all()
                np.testing.assert_array_equal(found[0], members[topic][want[0]])
                np.testing.assert_array_equal(scores[0], want_scores[0])
        # The searches kept what the budget allows: by default at most as
        # much as the table (3,000 rows): "a" and "b" (1,000 rows each), not
        # "c" (2,000).
        assert set(index._blocks) == {"a", "b"}
        assert index._blocks_held == embeddings[members["a"]].nbytes + embeddings[members["b"]].nbytes
        assert not index._blocks["a"].flags.writeable  # shared by every request
        assert index.topic_embeddings("a") is index.topic_embeddings("a")
        assert index.topic_embeddings("b") is index.topic_embeddings("b")
        assert index.topic_embeddings("c") is not index.topic_embeddings("c")
        # A budget of one block: the first topic asked for is kept, the others gathered per call.
        small = loaded_index(embeddings, topics, {})
        small.block_bytes = embeddings[members["a"]].nbytes
        blocks = {t: small.topic_embeddings(t) for t in ("a", "b", "c")}
        assert small.topic_embeddings("a") is blocks["a"]
        assert small.topic_embeddings("b") is not blocks["b"] and small.topic_embeddings("c") is not blocks["c"]
        for topic, block in blocks.items():
            np.testing.assert_array_equal(block, embeddings[members[topic]])
    finally:
        retriever.close()


def test_topic_blocks_asked_for_at_once_are_kept_once_within_the_budget():
    rng = np.random.default_rng(2)
    embeddings = rng.normal(size=(6000, 8)).astype(np.float32)
    topics = [[f"t{r % 6}"] for r in range(6000)]
    index = loaded_index(embeddings, topics, {})
    index.block_bytes = 3 * 1000 * 8 * 4  # three of the six topics' blocks
    barrier = threading.Barrier(8)

    def ask(worker):
        barrier.wait()
        return [index.topic_embeddings(f"t{(worker + i) % 6}") for i in range(6)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    assert len(index._blocks) == 3 and index._blocks_held == index.block_bytes
    assert index._blocks_held == sum(b.nbytes for b in index._blocks.values())
    members = topic_members(topics)
    for worker, blocks in enumerate(answers):
        for i, block in enumerate(blocks):
            np.testing.assert_array_equal(block, embeddings[members[f"t{(worker + i) % 6}"]])


def test_an_index_keeps_the_blocks_of_the_exactly_searched_topics_when_it_loads():
    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(3000, 8)).astype(np.float32)
    # Topic sizes: a 1500 (own index), b 900, c 300, d 300.
    topics = [["a"] if r % 2 else ["b"] if r % 10 < 6 else ["c"] if r % 10 == 6 else ["d"] for r in range(3000)]
    rows = topic_members(topics)["a"]
    cfg = ii.resolve_config(len(rows), ii.IndexConfig())
    own = {"a": TopicIndex("a", rows, ii.build_searcher(np.ascontiguousarray(embeddings[rows]), cfg), cfg, 8)}
    index = loaded_index(embeddings, topics, own)
    assert index.keep_topic_blocks(max_items=500) == 2  # c and d; a has its own index, b is over 500 items
    assert set(index._blocks) == {"c", "d"}
    tight = loaded_index(embeddings, topics, own)
    tight.block_bytes = 500 * 8 * 4  # room for c (300 rows, first of the smallest), not for d too
    assert tight.keep_topic_blocks(max_items=1000) == 1 and set(tight._blocks) == {"c"}
