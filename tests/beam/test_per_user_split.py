"""`data.split.mode=per_user`: each user's last N events are the eval split.

A log whose timestamps are only positions (1, 2, ... per user) has no
meaningful global cutoff. The world: 24 items, users u1..u10 where u<k> has
k events at positions 1..k, written interleaved by position (not grouped by
user); u10's last two events share a position (file order decides), and u6
repeats its first item at the end (a `duplicate_user_item` dead letter, so
not one of its last events). N = 2, min_history = 1: u1 and u2 (fewer than
N + min_history = 3 events) train on every event and have no eval record.
"""

from __future__ import annotations

import json

import pytest

from mer import cli
from mer_testing import BEAM_CLI_ARGS, decode, read_examples

N_EVAL = 2
MIN_HISTORY = 1


def _events() -> list[tuple[str, str, int, str]]:
    """`(user, item, position, action)` rows in file order."""
    rows = []
    for position in range(1, 11):
        for k in range(1, 11):
            if position <= k:
                item = f"i{(3 * k + 5 * position) % 24:02d}"
                action = "hide" if (k, position) == (8, 8) else "click"  # a negative eval target
                rows.append((f"u{k}", item, min(position, 9) if k == 10 else position, action))
    rows.append(("u6", rows[5][1], 7, "click"))  # u6's position-1 item again: a duplicate, not an event
    return rows


def expected_split(rows) -> tuple[set, set, set]:
    """(train targets, eval targets) as `(user, item)`, and the items of
    training events, by SPEC §6 order and the per-user rule."""
    train, evals, trained_items = set(), set(), set()
    for user in {r[0] for r in rows}:
        ordered = sorted((r[2], line, r[1]) for line, r in enumerate(rows) if r[0] == user)
        items = list(dict.fromkeys(item for _, _, item in ordered))  # first of each repeated item
        held_out = N_EVAL if len(items) >= N_EVAL + MIN_HISTORY else 0
        cut = len(items) - held_out
        train |= {(user, item) for item in items[MIN_HISTORY:cut]}
        evals |= {(user, item) for item in items[cut:]}
        trained_items |= set(items[:cut])
    return train, evals, trained_items


def _sets(raw) -> list[str]:
    sets = ["data.source.format=generic", f"data.source.events={raw}/events.csv",
            f"data.source.items={raw}/items.csv", "data.source.follows=''", "data.source.item_vector_dim=0",
            "data.source.item_categorical_columns=[]", "data.split.mode=per_user",
            f"data.split.per_user_eval={N_EVAL}", f"data.min_history={MIN_HISTORY}", "data.num_shards=2"]
    return [arg for s in sets for arg in ("--set", s)]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """`mer prepare` of the world; returns (raw dir, output dir, manifest)."""
    root = tmp_path_factory.mktemp("per_user")
    raw, out = root / "raw", root / "out"
    raw.mkdir()
    (raw / "items.csv").write_text("item_id,topics\n" + "".join(f"i{i:02d},t{i % 4}\n" for i in range(24)))
    (raw / "events.csv").write_text("user_id,item_id,timestamp,action\n"
                                    + "".join(f"{u},{i},{t},{a}\n" for u, i, t, a in _events()))
    assert cli.main(["prepare", "--config", "synthetic-small", "--output_dir", str(out), *_sets(raw),
                     *BEAM_CLI_ARGS]) == 0
    return raw, out, json.loads((out / "manifest.json").read_text())


def test_each_users_last_events_are_exactly_the_eval_targets(prepared):
    raw, out, manifest = prepared
    train, evals, trained_items = expected_split(_events())
    records = read_examples(f"{out}/eval/implicit-*")
    got = {(r["user_id"].decode(), r["target_item_id"].decode()) for r in records}
    assert got == evals and len(records) == len(evals) == N_EVAL * 8  # u3..u10, N records each
    assert {(r["user_id"].decode(), r["target_item_id"].decode())
            for r in read_examples(f"{out}/train/implicit-*")} == train
    assert not {u for u, _ in got} & {"u1", "u2"}
    # u10's tie at position 9: file order puts the position-10 row's item last.
    u10 = sorted((decode(r["history_item_ids"]), r["target_item_id"].decode())
                 for r in records if r["user_id"] == b"u10")
    u10_rows = [item for user, item, _, _ in _events() if user == "u10"]
    assert u10 == [(u10_rows[:8], u10_rows[8]), (u10_rows[:9], u10_rows[9])]
    # The hide is an eval target like any other (flagged negative).
    (u8_last,) = [r for r in records if r["user_id"] == b"u8" and r["target_timestamp"] == 8]
    assert u8_last["target_negative"] == 1
    assert manifest["cutoff"] is None
    counts = manifest["counts"]
    assert counts["users_train_only"] == 2 and counts["eval_events"] == len(evals)
    assert manifest["dead_letter"] == {"events/duplicate_user_item": 1}
    # The corpus is every item of a training event (u1 and u2's included).
    assert (out / "corpus" / "corpus.txt").read_text().split() == sorted(trained_items)


def test_train_then_evaluate_on_a_per_user_split(prepared, tmp_path):
    from trainer import task

    raw, out, manifest = prepared
    model_dir = tmp_path / "model"
    sets = _sets(raw) + [arg for s in ("model.kind=single", "model.sequence_layers=0", "train.batch_size=16",
                                       "train.epochs=1") for arg in ("--set", s)]
    assert task.main(["--data_dir", str(out), "--config", "synthetic-small", "--model_dir", str(model_dir),
                      "--verbose", "0", *sets]) == 0
    summary = json.loads((model_dir / "training.json").read_text())
    assert summary["records"]["train"] + summary["records"]["validation"] == manifest["counts"][
        "examples/train/implicit"]
    # The validation carve mirrors the eval split: each user's last N
    # training records (users with more than N of them), not a time range.
    by_user = {}
    for r in read_examples(f"{out}/train/implicit-*"):
        by_user.setdefault(r["user_id"], []).append(r["target_timestamp"])
    carved = {u: sorted(ts)[-N_EVAL:] for u, ts in by_user.items() if len(ts) > N_EVAL}
    assert summary["records"]["validation"] == sum(len(ts) for ts in carved.values())
    assert summary["validation_set"] == {"records": summary["records"]["validation"],
                                         "carve_records": summary["records"]["validation"], "selection": "all",
                                         "seed": None, "per_user_last": N_EVAL, "users": len(carved)}
    assert summary["validation_cutoff"] is None
    assert cli.main(["evaluate", "--model_dir", str(model_dir), "--ks", "5,10"]) == 0
    report = json.loads((model_dir / "evaluation.json").read_text())
    assert report["records"] == manifest["counts"]["examples/eval/implicit"] == N_EVAL * 8


@pytest.mark.parametrize("value", [0, -1, 1.5])
def test_per_user_eval_must_be_a_whole_number_of_at_least_one(value):
    from trainer.config import load_config

    with pytest.raises(ValueError, match="data.split.per_user_eval"):
        load_config(None, ["data.split.mode=per_user", f"data.split.per_user_eval={value}"])


def test_a_per_user_run_without_training_examples_says_the_split(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    (raw / "items.csv").write_text("item_id,topics\na,t1\n")
    (raw / "events.csv").write_text("user_id,item_id,timestamp\nu1,a,1\nu2,a,1\n")  # one event per user
    assert cli.main(["prepare", "--config", "synthetic-small", "--output_dir", str(out), *_sets(raw),
                     *BEAM_CLI_ARGS]) == 1
    err = capsys.readouterr().err
    assert "no training examples" in err and "per-user split (each user's last 2 event(s) are eval)" in err
