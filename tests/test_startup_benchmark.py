"""`benchmarks/startup.py` reports what it read, on the shared prepared world."""

import json

from benchmarks import startup
from trainer.data import target_timestamps


def test_reports_table_sizes_and_times(world, tmp_path, capsys):
    out = tmp_path / "startup.json"
    assert startup.main(["--prepared", world, "--repeats", "1", "--out", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    items = sum(1 for line in open(f"{world}/vocab/items.txt") if line.strip())
    corpus = sum(1 for line in open(f"{world}/corpus/corpus.txt") if line.strip())
    assert (row["items"], row["corpus"]) == (items, corpus)
    assert row["train_records"] == len(target_timestamps(f"{world}/train/implicit-*")) > 0
    assert all(row[k] > 0 for k in ("load_item_table_s", "load_corpus_s", "target_timestamps_s"))
    assert f"| {world} | {items} | {row['train_records']} |" in capsys.readouterr().out
