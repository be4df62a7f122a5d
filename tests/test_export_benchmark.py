"""`benchmarks/export.py`'s index section at a tiny size: the fields it reports
(no assertions on wall-clock time)."""

import json

from benchmarks import export


def test_index_section_reports_every_config(tmp_path, capsys):
    out = tmp_path / "export.json"
    assert export.main(["--sections", "index", "--sizes", "5000", "--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["quick"] is True and "--sizes 5000" in result["command"]
    index = result["index"]
    rows = index["rows"]
    assert [r["method"] for r in rows][:3] == ["exact numpy (matmul+argpartition)", "scann brute_force",
                                               "scann auto (brute_force)"]
    assert {r["kind"] for r in rows} == {"exact", "brute_force", "tree_ah"}
    for r in rows:
        assert r["items"] == 5000
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
    printed = capsys.readouterr().out
    assert "| items | method | build s | recall@100 | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms |" in printed
    assert "| 5,000 | scann brute_force |" in printed
