"""`mer demo` end to end, shrunk (a few training steps, 60 served records):
every stage's artifacts exist and are valid, the service answers with
de-duplicated candidates from both retrievers, served HR@K is computed, and
a second run prints the same numbers."""

import json
import os
import re

import pytest

pytestmark = pytest.mark.slow


def _run(run_dir, capsys):
    from mer import cli

    assert cli.main(["demo", "--run_dir", str(run_dir), "--epochs", "1", "--steps", "6", "--records", "60"]) == 0
    return capsys.readouterr().out


def test_demo_end_to_end_and_reproducible(tmp_path, capsys):
    out = _run(tmp_path / "demo", capsys)
    base = tmp_path / "demo" / "export"
    for path in ("data/manifest.json", "dcm/artifacts/samples.tfrecord", "cr/checkpoint", "dcm/evaluation.json",
                 "export/models.config", "export/user_implicit/1/saved_model.pb", "export/item_explicit/1/saved_model.pb",
                 "export/index/implicit/1/build.json", "export/index/explicit/1/recall.json",
                 "export/embeddings/implicit/1/embed.json"):
        assert (tmp_path / "demo" / path).exists(), path
    assert json.load(open(base / "index" / "implicit" / "1" / "recall.json"))["recall"] == pytest.approx(1.0)
    report = json.load(open(tmp_path / "demo" / "demo.json"))
    for name in ("implicit", "implicit+explicit"):
        row = report["served_hr"][name]
        assert row["records"] == 60 and 0 <= row["hr@20"] <= row["hr@50"] <= row["hr@100"] <= 1
    # Three users' merged candidates, with items from both retrievers, no repeats.
    tables = out.split("\nuser ")[1:]
    assert len(tables) == 3
    for table in tables:
        items = re.findall(r"^\s+\d+\s+(\S+)\s", table, flags=re.M)
        assert len(items) == 10 and len(set(items)) == 10
        assert "implicit[" in table and "explicit[" in table
    assert "served HR@K through `mer serve`" in out
    second = _run(tmp_path / "again", capsys)
    def strip(text, run):  # latencies and the run directory differ
        return re.sub(r"ms \{.*\}", "", text).replace(str(tmp_path / run), "RUN")

    assert strip(second, "again") == strip(out, "demo")
    assert json.load(open(tmp_path / "again" / "demo.json"))["served_hr"] == report["served_hr"]
    assert os.listdir(tmp_path / "again")
