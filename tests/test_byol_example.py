"""The "bring your own logs" example (`docs/examples/byol/`) prepares as
`docs/bring-your-own-logs.md` says: `mer prepare` with its config, run from
the repository root, gives train and eval examples of both kinds, and its
three deliberately bad event rows land in the dead letter."""

from __future__ import annotations

import json

from mer_testing import BEAM_CLI_ARGS, REPO, decode, read_examples

EXAMPLE = REPO / "docs" / "examples" / "byol"
# Beam's in-process runner: one worker, no process start-up (a few seconds).


def test_mer_prepare_runs_on_the_example_files(tmp_path, monkeypatch, capsys):
    from mer import cli

    monkeypatch.chdir(REPO)  # the example config's globs are relative to the repository root
    out = tmp_path / "prepared"
    config = (EXAMPLE / "config.yaml").relative_to(REPO)
    assert cli.main(["prepare", "--config", str(config), "--output_dir", str(out), *BEAM_CLI_ARGS]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert all(summary["examples"][name] > 0 for name in
               ("train/implicit", "train/explicit", "eval/implicit", "eval/explicit")), summary["examples"]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cutoff"] == 1772409600  # data.split.timestamp: day 2 is the eval period
    assert all(b["ok"] for b in manifest["balance"].values()), manifest["balance"]
    assert manifest["dead_letter"] == {"events/bad_timestamp": 1, "events/duplicate_user_item": 1,
                                       "events/unknown_item": 1}
    dead = sorted((d["file"].rsplit("/", 1)[-1], d["line"], d["reason"])
                  for f in (out / "dead_letter").glob("*.jsonl") for d in map(json.loads, f.read_text().splitlines()))
    assert dead == [("events-2026-03-02.jsonl", 4, "duplicate_user_item"),
                    ("events-2026-03-02.jsonl", 6, "unknown_item"),
                    ("events-2026-03-02.jsonl", 10, "bad_timestamp")]
    items_in = len((EXAMPLE / "items.csv").read_text().splitlines()) - 1
    tables = manifest["tables"]
    assert tables["vocab/items"] == items_in and tables["items_with_invalid_features"] == 1
    assert tables["content_dim"] == 4 + 1  # the 4-float embedding column + the numeric `price`
    assert tables["categorical_columns"] == ["format"]

    topics = set((out / "vocab" / "topics.txt").read_text().split())
    explicit = read_examples(f"{out}/train/explicit-*")
    assert {t for r in explicit for t in decode([r["condition_topic"]])} <= topics
    follows = {line.split(",")[0] for line in (EXAMPLE / "follows.csv").read_text().splitlines()[1:]}
    implicit = read_examples(f"{out}/train/implicit-*")
    assert {u for r in implicit if len(r["followed_topics"]) for u in decode([r["user_id"]])} == follows
