"""The ScaNN item index: exact and approximate search against a NumPy
reference, the saved layout, moves, interrupted saves and config resolution."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from common import contract
from common import item_index as index_lib
from common.item_index import (IndexConfig, build_index, exact_search, load_index, recall_at_k,
                          resolve_config, save)

LAYOUT = {contract.INDEX_SEARCHER, contract.INDEX_ITEMS, contract.INDEX_TOPICS, contract.INDEX_BUILD,
          contract.INDEX_RECALL}


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _items(n):
    ids = [f"item{i}" for i in range(n)]
    topics = [[f"t{i % 7}", f"t{(i * 3) % 11}"][: 1 + i % 2] for i in range(n)]
    topics[0] = []  # an item without topics round-trips as an empty line
    return ids, topics


@pytest.fixture(scope="module")
def clustered():
    """20k unit vectors in 200 clusters (d=32), queries near random items; and a tree_ah index."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(200, 32))
    db = _unit(centres[rng.integers(0, 200, 20_000)] + 0.35 * rng.normal(size=(20_000, 32)))
    queries = _unit(db[rng.integers(0, len(db), 300)] + 0.15 * rng.normal(size=(300, 32)))
    ids, topics = _items(len(db))
    return db, queries, build_index(db, ids, topics, IndexConfig(kind="tree_ah"))


def test_exact_search_breaks_ties_by_lower_row_and_pads():
    db = np.array([[1, 0], [1, 0], [0, 1], [1, 0]], np.float32)
    # q=[1,0] scores rows 1,1,0,1: the three tied rows in row order; q=[0,1]: row 2 first, then
    # rows 0,1,3 tied at 0 -> 0,1. k=5 > N=4 pads with -1 / -inf.
    rows, scores = exact_search(db, np.array([[1, 0], [0, 1]], np.float32), 5)
    np.testing.assert_array_equal(rows, [[0, 1, 3, 2, -1], [2, 0, 1, 3, -1]])
    np.testing.assert_array_equal(scores, [[1, 1, 1, 0, -np.inf], [1, 0, 0, 0, -np.inf]])


@pytest.mark.parametrize("k", [1, 20, 60])
def test_brute_force_equals_numpy(k):
    rng = np.random.default_rng(k)
    db = rng.normal(size=(3000, 16)).astype(np.float32)
    queries = rng.normal(size=(50, 16)).astype(np.float32)
    index = build_index(db, *_items(len(db)), IndexConfig(kind="brute_force"))
    rows, scores = index.search(queries, k)
    want_rows, want_scores = exact_search(db, queries, k)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5, rtol=1e-5)
    assert rows.dtype == np.int64 and scores.dtype == np.float32


def test_fewer_items_than_k_pads_with_minus_one():
    db = _unit(np.random.default_rng(0).normal(size=(7, 8)))
    index = build_index(db, *_items(7), IndexConfig())
    assert index.config.kind == "brute_force"
    rows, scores = index.search(db[:3], 10)
    want_rows, want_scores = exact_search(db, db[:3], 10)
    np.testing.assert_array_equal(rows, want_rows)
    assert (rows[:, 7:] == -1).all() and np.isneginf(scores[:, 7:]).all()
    np.testing.assert_allclose(scores[:, :7], want_scores[:, :7], atol=1e-5)


def test_tree_ah_recall_at_100_against_exact(clustered):
    db, queries, index = clustered
    assert (index.config.kind, index.config.num_leaves, index.config.leaves_to_search) == ("tree_ah", 141, 30)
    got = recall_at_k(index, db, queries, 100)
    assert got["recall"] >= 0.95, got
    assert (got["k"], got["queries"], got["items"]) == (100, 300, 20_000)
    rows, scores = index.search(queries[:5], 100)
    # Reordered candidates carry exact dot products, best first.
    np.testing.assert_allclose(scores, np.take_along_axis(queries[:5] @ db.T, rows, 1), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_save_writes_the_contract_layout_and_loads_after_a_move(clustered, tmp_path):
    db, queries, index = clustered
    recall = recall_at_k(index, db, queries[:50], 100)
    first = contract.index_dir(str(tmp_path / "a"), contract.IMPLICIT, 1)
    save(index, first, recall=recall)
    assert set(os.listdir(first)) == LAYOUT
    assert os.listdir(os.path.dirname(first)) == ["1"]  # no temporary sibling left
    build = json.load(open(f"{first}/build.json"))
    assert (build["num_items"], build["dim"]) == (20_000, 32) and build["build_seconds"] > 0
    assert build["config"]["kind"] == "tree_ah" and build["config"]["num_leaves"] == 141
    assert json.load(open(f"{first}/recall.json")) == recall

    moved = contract.index_dir(str(tmp_path / "b"), contract.IMPLICIT, 1)
    shutil.copytree(first, moved)
    shutil.rmtree(tmp_path / "a")
    loaded = load_index(moved)
    want = index.search(queries, 100)
    got = loaded.search(queries, 100)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert loaded.item_ids == index.item_ids and loaded.topics == index.topics
    assert loaded.topics[0] == [] and loaded.config == index.config and loaded.dim == 32
    assert index_lib.load_recall(moved) == recall


def test_load_repairs_absolute_asset_paths_after_a_move(tmp_path):
    """Searchers serialised with ScaNN's default absolute asset paths still load once moved."""
    db = _unit(np.random.default_rng(3).normal(size=(3000, 16)))
    index = build_index(db, *_items(len(db)), IndexConfig(kind="tree_ah", num_leaves=30))
    first = str(tmp_path / "a" / "1")
    save(index, first)
    shutil.rmtree(f"{first}/scann")
    os.makedirs(f"{first}/scann")
    index.searcher.serialize(f"{first}/scann", relative_path=False)
    assert f'"{first}/scann/' in open(f"{first}/scann/scann_assets.pbtxt").read()
    shutil.copytree(first, tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    got = load_index(str(tmp_path / "b")).search(db[:20], 10)
    np.testing.assert_array_equal(got[0], index.search(db[:20], 10)[0])


def test_interrupted_save_leaves_nothing_loadable(clustered, tmp_path, monkeypatch):
    db, _, index = clustered
    target = str(tmp_path / "index" / "1")
    real_write = index_lib._write_text

    def dies_at_build_json(path, text):
        if path.endswith(contract.INDEX_BUILD):
            raise KeyboardInterrupt("killed")
        real_write(path, text)

    monkeypatch.setattr(index_lib, "_write_text", dies_at_build_json)
    with pytest.raises(KeyboardInterrupt):
        save(index, target)
    monkeypatch.undo()
    assert not os.path.exists(target) and os.listdir(tmp_path / "index") == []

    # A process killed outright leaves its temporary sibling behind: neither loads.
    save(index, target)
    left_behind = str(tmp_path / "index" / ".2.tmp-0123456789ab")
    os.rename(target, left_behind)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "index" / "2")):
        load_index(str(tmp_path / "index" / "2"))
    with pytest.raises(FileNotFoundError, match="unfinished"):
        load_index(left_behind)
    # A directory missing a file names that file.
    os.rename(left_behind, target)
    os.remove(f"{target}/topics.txt")
    with pytest.raises(FileNotFoundError, match=f"{target}/topics.txt"):
        load_index(target)


def test_save_and_load_through_a_gfile_uri(tmp_path, monkeypatch):
    """Object stores (here TF's ram://) take the copy path; build.json is the commit marker."""
    db = _unit(np.random.default_rng(4).normal(size=(3000, 16)))
    index = build_index(db, *_items(len(db)), IndexConfig(kind="tree_ah", num_leaves=30))
    target = f"ram://{tmp_path.name}/index/implicit/1"
    save(index, target)
    got = load_index(target).search(db[:20], 10)
    np.testing.assert_array_equal(got[0], index.search(db[:20], 10)[0])

    real_write = index_lib._write_text

    def dies_before_build_json(path, text):  # everything else is written, as by a killed save
        if not path.endswith(contract.INDEX_BUILD):
            real_write(path, text)

    monkeypatch.setattr(index_lib, "_write_text", dies_before_build_json)
    save(index, f"ram://{tmp_path.name}/index/implicit/2")
    with pytest.raises(FileNotFoundError, match=f"ram://{tmp_path.name}/index/implicit/2/build.json"):
        load_index(f"ram://{tmp_path.name}/index/implicit/2")


def test_load_of_a_missing_directory_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        load_index(str(tmp_path / "nowhere"))


def test_save_refuses_an_existing_version(tmp_path):
    db = _unit(np.random.default_rng(0).normal(size=(10, 4)))
    index = build_index(db, *_items(10))
    save(index, str(tmp_path / "1"))
    with pytest.raises(FileExistsError, match=str(tmp_path / "1")):
        save(index, str(tmp_path / "1"))


@pytest.mark.parametrize("n, kind, leaves, to_search, sample", [
    (1, "brute_force", None, None, None),
    (19_999, "brute_force", None, None, None),
    (20_000, "tree_ah", 141, 30, 20_000),
    (100_000, "tree_ah", 316, 30, 100_000),
    (1_000_000, "tree_ah", 1000, 50, 250_000),
    (10_000_000, "tree_ah", 3162, 158, 250_000),
])
def test_resolve_config_by_corpus_size(n, kind, leaves, to_search, sample):
    cfg = resolve_config(n)
    assert (cfg.kind, cfg.num_leaves, cfg.leaves_to_search, cfg.training_sample_size) == \
        (kind, leaves, to_search, sample)
    assert (cfg.dims_per_block, cfg.reorder) == ((None, None) if kind == "brute_force" else (1, 300))


def test_resolve_config_keeps_explicit_fields():
    cfg = resolve_config(1000, IndexConfig(kind="tree_ah", num_leaves=50, leaves_to_search=7,
                                           dims_per_block=2, reorder=150, anisotropic_threshold=0.3))
    assert (cfg.num_leaves, cfg.leaves_to_search, cfg.dims_per_block, cfg.reorder,
            cfg.anisotropic_threshold, cfg.training_sample_size) == (50, 7, 2, 150, 0.3, 1000)
    assert resolve_config(1000, IndexConfig(brute_force_max_items=500)).kind == "tree_ah"
    assert resolve_config(10**6, IndexConfig(kind="brute_force")).kind == "brute_force"


@pytest.mark.parametrize("cfg, n, message", [
    (IndexConfig(kind="hnsw"), 10, "kind='hnsw'.*allowed"),
    (IndexConfig(kind="tree_ah", num_leaves=10, leaves_to_search=11), 100, "leaves_to_search=11"),
    (IndexConfig(kind="tree_ah", num_leaves=200), 100, "num_leaves=200"),
    (IndexConfig(reorder=0), 100, "reorder=0"),
    (IndexConfig(), 0, "num_items=0"),
])
def test_resolve_config_rejects_bad_values(cfg, n, message):
    with pytest.raises(ValueError, match=message):
        resolve_config(n, cfg)


def test_build_index_rejects_bad_rows():
    db = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="3 embeddings but 2 item_ids"):
        build_index(db, ["a", "b"], [[], [], []])
    with pytest.raises(ValueError, match=r"item_topics\[1\] has topic 'x\|y'"):
        build_index(db, ["a", "b", "c"], [[], ["x|y"], []])
    db[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 2 \\(item 'c'\\)"):
        build_index(db, ["a", "b", "c"], [[], [], []])
