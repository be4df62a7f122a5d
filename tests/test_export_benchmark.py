"""`benchmarks/export.py`, every section at a tiny size (`--quick --sizes
5000`: a synthetic-small world, DCM and CR trained 8 steps, a 5,000-item
catalog): the fields each reports (no assertions on wall-clock time)."""

import json

import pytest

from benchmarks import export
from mer_testing import run_benchmark

SIZE = 5000


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run of all sections: `(JSON result, printed tables)`."""
    tmp = tmp_path_factory.mktemp("export_benchmark")
    out = tmp / "export.json"
    return run_benchmark(export.main, ["--quick", "--sizes", str(SIZE), "--scratch", str(tmp / "scratch"),
                                       "--out", str(out)], out)


def test_runs_every_section(run):
    result, _ = run
    assert result["quick"] is True and "--sizes 5000" in result["command"]
    assert set(export.SECTIONS) == {"export", "embed", "index"} and set(result) >= set(export.SECTIONS)


def test_export_section_reports_every_tower(run):
    result, printed = run
    section = result["export"]
    assert [(r["model"], r["tower"]) for r in section["rows"]] == [
        ("dcm", "user_implicit"), ("dcm", "item_implicit"), ("cr", "user_explicit"), ("cr", "item_explicit")]
    for r in section["rows"]:
        assert r["seconds"] > 0 and r["size_mb"] > 0 and r["op_types"] > 0 and r["warmup_requests"] > 0
    assert section["total_seconds"] >= section["towers_seconds"] > 0
    assert section["train"] == {"steps": 8, "batch_size": 64}
    assert {k: m["steps"] for k, m in section["models"].items()} == {"dcm": 8, "cr": 8}
    assert section["world"]["reused"] is False
    assert "| model | tower | seconds | SavedModel MB | op types | warmup requests |" in printed
    assert "| dcm | user_implicit |" in printed and "| total | export_models |" in printed


def test_export_section_reuses_the_world_and_models(run, tmp_path):
    """A second run finds the prepared world and trained models in the scratch dir."""
    result, _ = run
    scratch = result["export"]["world"]["dir"].rsplit("/", 1)[0]
    out = tmp_path / "again.json"
    assert export.main(["--sections", "export", "--quick", "--scratch", scratch, "--out", str(out)]) == 0
    again = json.loads(out.read_text())["export"]
    assert again["world"]["reused"] is True and all(m["reused"] for m in again["models"].values())
    assert [r["tower"] for r in again["rows"]] == [r["tower"] for r in result["export"]["rows"]]


def test_embed_section_embeds_every_item(run):
    result, printed = run
    rows = result["embed"]["rows"]
    assert [r["method"] for r in rows] == [
        "in-process model.item_embeddings (65,536 a batch)", "in-process SavedModel signature (4,096 a batch)",
        "run_embed_items, DirectRunner multi_processing, 2 workers", "run_embed_items, DirectRunner in_memory"]
    for r in rows:
        assert r["items_total"] == SIZE and r["items"] == SIZE  # every catalog item is in the corpus
        assert r["seconds"] > 0 and r["items_per_second"] > 0
    assert "--direct_num_workers=2" in rows[2]["beam_args"] and "--direct_running_mode=in_memory" in rows[3]["beam_args"]
    model = result["embed"]["models"][0]
    assert model["items"] == SIZE and model["size_mb"] > 0 and model["op_types"] > 0
    assert "| items | method | items embedded | seconds | items/s |" in printed
    assert "| 5,000 | run_embed_items, DirectRunner in_memory | 5,000 |" in printed


def test_embed_section_writes_readable_embeddings(run):
    from beam.embed_items import read_embeddings

    rows = run[0]["embed"]["rows"]
    embedded = read_embeddings(rows[-1]["output"])
    assert len(embedded["item_ids"]) == SIZE and embedded["embeddings"].shape == (SIZE, 32)
    assert embedded["item_ids"][:2] == ["item0", "item1"]


def test_index_section_reports_every_config(run):
    result, printed = run
    index = result["index"]
    rows = index["rows"]
    assert [r["method"] for r in rows][:3] == ["exact numpy (matmul+argpartition)", "scann brute_force",
                                               "scann auto (brute_force)"]
    assert {r["kind"] for r in rows} == {"exact", "brute_force", "tree_ah"}
    for r in rows:
        assert r["items"] == SIZE
        assert set(r) >= {"method", "kind", "build_s", "recall@100", "p50_ms", "p99_ms", "cpu_p99_ms",
                          "requests", "config"}
        assert 0.0 <= r["recall@100"] <= 1.0 and r["p99_ms"] >= r["p50_ms"] > 0
    by_method = {r["method"]: r for r in rows}
    assert by_method["scann brute_force"]["recall@100"] == 1.0
    assert by_method["scann auto (brute_force)"]["kind"] == "brute_force"  # 5,000 < brute_force_max_items
    tree = [r for r in rows if r["kind"] == "tree_ah"]
    assert len(tree) == 3 and all(r["config"]["num_leaves"] == 71 for r in tree)
    assert index["embeddings"][0]["dim"] == 32 and index["bar"]["met"] is None
    assert any("RANDOM INIT" in note for note in index["notes"])
    assert "| items | method | build s | recall@100 | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms |" in printed
    assert "| 5,000 | scann brute_force |" in printed
