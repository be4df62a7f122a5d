"""Prepare pipeline on a handful of generic rows, bad ones included.

Split at T = 300: train = timestamp < 300.
"""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam import prepare
from mer_testing import BEAM_CLI_ARGS, decode, read_examples
from trainer.config import load_config

ITEMS = (
    "item_id,topics,content,format\n"
    "a,t1|t2,0.1 0.2,img\n"
    "b,t2,0.3 0.4,vid\n"
    "c,t3,,img\n"  # missing content: a valid row, an invalid item
    "d,t1,0.5 x,img\n"  # line 5: bad_number
    "b,t9,0.1 0.1,img\n"  # line 6: duplicate_item
    ",t1,0.1 0.2,img\n"  # line 7: missing_field
)
EVENTS_CSV = (
    b"user_id,item_id,timestamp,action,source_topic\r\n"
    b"u1,a,100,click,\r\n"
    b"u1,b,200,click,t2\r\n"
    b"u1,c,250,hide,\r\n"
    b"u1,a,260,click,\r\n"  # line 5: duplicate_user_item (a at 100 kept)
    b"u1,b,400,click,t2\r\n"  # line 6: duplicate_user_item
    b"u1,c,500,click,t3\r\n"  # line 7: duplicate_user_item
    b"u2,zz,150,click,\r\n"  # line 8: unknown_item
    b"u3,a,notatime,click,\r\n"  # line 9: bad_timestamp
    b",a,100,click,\r\n"  # line 10: missing_field
    b"u4,a,100\r\n"  # line 11: wrong_field_count
    b"u5,\xff\xfe,100,click,\r\n"  # line 12: bad_encoding
)
EVENTS_JSONL = (
    '{"user_id": "u2", "item_id": "b", "timestamp": "1970-01-01T00:02:00Z"}\n'
    '{"user_id": "u2", "item_id": "a", "timestamp": 130, "action": "click"}\n'
    '{"user_id": "u2", "item_id": "c", "timestamp": 310, "source_topic": "t3"}\n'
    '{"user_id": "u2", "item_id": "a", "timestamp": 130, "action": "click"}\n'  # exact duplicate row
    "{not json\n"  # line 5: bad_json
    "[1, 2]\n"  # line 6: bad_json
    '{"user_id": "u3", "item_id": "c", "timestamp": 50, "action": "click"}\n'
    '{"user_id": "u3", "item_id": "b", "timestamp": 60}\n'
)
FOLLOWS = "user_id,topic\nu1,t1\nu1,t1\nu2,t3\n"  # line 3: duplicate_follow


@pytest.fixture
def generic_overrides(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "items.csv").write_text(ITEMS)
    (raw / "events-a.csv").write_bytes(EVENTS_CSV)
    (raw / "events-b.jsonl").write_text(EVENTS_JSONL)
    (raw / "events-c.csv").write_bytes(b"")  # empty file
    (raw / "follows.csv").write_text(FOLLOWS)
    return [
        "data.source.format=generic",
        f"data.source.events={raw}/events-*",
        f"data.source.items={raw}/items.csv",
        f"data.source.follows={raw}/follows.csv",
        "data.source.item_vector_dim=2",
        "data.source.item_categorical_columns=[format]",
        "data.split.mode=timestamp",
        "data.split.timestamp=300",
        "data.num_shards=3",
    ]


@pytest.fixture
def generic_input(tmp_path, generic_overrides):
    return load_config(None, generic_overrides), tmp_path / "raw", tmp_path / "out"


@pytest.fixture(params=[{}, {"BATCH": 1}, {"MAX_BUFFERED": 2}], ids=["batch-default", "batch-1", "buffered-2"])
def shuffle_batch(request, monkeypatch):
    """How records are packed for the shuffle (`ShardUserRecords`): by default
    each file's records of a shard are one value here; `BATCH` 1 splits one
    user's events (and duplicates) over several values; `MAX_BUFFERED` 2
    flushes every shard's batch whenever 2 records are held."""
    for name, value in request.param.items():
        monkeypatch.setattr(prepare.ShardUserRecords, name, value)
    return request.param


def _dead_key(d):
    return (d["kind"], d["file"].rsplit("/", 1)[-1], d["line"], d["reason"])


EXPECTED_DEAD = {
    "Items": [("items", "items.csv", 5, "bad_number"), ("items", "items.csv", 7, "missing_field")],
    "ItemDuplicates": [("items", "items.csv", 6, "duplicate_item")],
    "Users": [
        ("events", "events-a.csv", 8, "unknown_item"),
        ("events", "events-a.csv", 9, "bad_timestamp"),
        ("events", "events-a.csv", 10, "missing_field"),
        ("events", "events-a.csv", 11, "wrong_field_count"),
        ("events", "events-a.csv", 12, "bad_encoding"),
        ("events", "events-b.jsonl", 5, "bad_json"),
        ("events", "events-b.jsonl", 6, "bad_json"),
    ],
    "Dedup": [
        ("events", "events-a.csv", 5, "duplicate_user_item"),
        ("events", "events-a.csv", 6, "duplicate_user_item"),
        ("events", "events-a.csv", 7, "duplicate_user_item"),
        ("events", "events-b.jsonl", 4, "duplicate_user_item"),
        ("follows", "follows.csv", 3, "duplicate_follow"),
    ],
}


def test_bad_rows_go_to_dead_letter_with_file_line_reason(generic_input, shuffle_batch):
    cfg, raw, out = generic_input
    with TestPipeline() as p:
        outputs = prepare.build_pipeline(p, cfg, str(out))
        for stage, expected in EXPECTED_DEAD.items():
            assert_that(outputs["dead"][stage] | f"Key{stage}" >> beam.Map(_dead_key), equal_to(expected),
                        label=f"Check{stage}")
    manifest = json.loads((out / "manifest.json").read_text())
    # Counts in = counts out + dead letter, exactly.
    assert manifest["balance"] == {
        "events": {"in": 19, "kept": 8, "dead": 11, "ok": True},
        "items": {"in": 6, "kept": 3, "dead": 3, "ok": True},
        "follows": {"in": 3, "kept": 2, "dead": 1, "ok": True},
    }
    assert manifest["counts"]["events_empty_files"] == 1
    dead_files = list((out / "dead_letter").glob("*.jsonl"))
    dead_rows = [json.loads(line) for f in dead_files for line in f.read_text().splitlines()]
    assert len(dead_rows) == 15
    bad_ts = next(d for d in dead_rows if d["reason"] == "bad_timestamp")
    assert "notatime" in bad_ts["detail"] and "ISO-8601" in bad_ts["detail"]
    assert bad_ts["raw"] == "u3,a,notatime,click,"


def test_examples_split_history_and_validity(generic_input, shuffle_batch):
    cfg, raw, out = generic_input
    with TestPipeline() as p:
        prepare.build_pipeline(p, cfg, str(out))
    # u1 kept: a@100, b@200, c@250(hide). u2 kept: b@120, a@130, c@310.
    # u3 kept: c@50, b@60.
    train = read_examples(f"{out}/train/implicit-*")
    evals = read_examples(f"{out}/eval/implicit-*")
    got_train = sorted((r["user_id"].decode(), r["target_item_id"].decode()) for r in train)
    assert got_train == [("u1", "b"), ("u1", "c"), ("u2", "a"), ("u3", "b")]
    u1c = next(r for r in train if r["target_item_id"] == b"c")
    assert decode(u1c["history_item_ids"]) == ["a", "b"]
    assert u1c["target_negative"] == 1
    assert list(u1c["history_valid"]) == [1, 1]
    assert decode(u1c["followed_topics"]) == ["t1"]
    (u2c,) = evals
    # Eval history holds every earlier event; c (missing content) is the target.
    assert decode(u2c["history_item_ids"]) == ["b", "a"]
    explicit = read_examples(f"{out}/train/explicit-*")
    assert [(r["target_item_id"], r["condition_topic"]) for r in explicit] == [(b"b", b"t2")]
    (eval_explicit,) = read_examples(f"{out}/eval/explicit-*")
    assert eval_explicit["condition_topic"] == b"t3"
    assert (out / "corpus" / "corpus.txt").read_text().split() == ["a", "b", "c"]
    # Most engaged first, ties by id.
    assert (out / "vocab" / "items.txt").read_text().split() == ["b", "a", "c"]
    counts = dict(line.split("\t") for line in (out / "items" / "train_counts.tsv").read_text().splitlines())
    assert counts == {"a": "2", "b": "3", "c": "2"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cutoff"] == 300.0
    assert manifest["tables"]["items_with_invalid_features"] == 1


def test_manifest_counts_items_whose_topics_the_model_truncates(tmp_path, generic_overrides):
    from trainer.item_table import load_item_table

    cfg = load_config(None, [*generic_overrides, "model.max_item_topics=1"])
    out = tmp_path / "out"
    with TestPipeline() as p:
        prepare.build_pipeline(p, cfg, str(out))
    tables = json.loads((out / "manifest.json").read_text())["tables"]
    # a (t1|t2) is the only kept item with two topics.
    assert tables["max_item_topics"] == 1 and tables["items_topics_truncated"] == 1
    table = load_item_table(str(out), max_topics=1)
    # t1 is carried by a alone, t2 by a and b: a keeps t1.
    assert table.item_topics(table.ids.index("a") + 1) == ["t1"] and table.topics_truncated == 1


def test_history_validity_marks_missing_features_and_negative_actions(generic_input):
    cfg, raw, out = generic_input
    cfg.data.split.timestamp = 1000  # everything is training
    with TestPipeline() as p:
        prepare.build_pipeline(p, cfg, str(out))
    train = {(r["user_id"], r["target_item_id"]): r for r in read_examples(f"{out}/train/implicit-*")}
    # c has missing features: invalid although the action (click) is positive.
    u3b = train[(b"u3", b"b")]
    assert decode(u3b["history_item_ids"]) == ["c"]
    assert list(u3b["history_valid"]) == [0] and list(u3b["history_negative"]) == [0]
    # u1's c was a hide: the target is flagged negative.
    assert train[(b"u1", b"c")]["target_negative"] == 1


def test_missing_required_input_is_a_clear_error(tmp_path):
    cfg = load_config(None, ["data.source.format=generic", f"data.source.events={tmp_path}/nope-*.csv",
                             f"data.source.items={tmp_path}/items.csv"])
    with pytest.raises(FileNotFoundError, match="data.source.events: pattern .*nope-\\*.csv.* matched no files"):
        prepare.source_inputs(cfg)


def _shard_counts(directory):
    return sorted({p.name.rsplit("-of-", 1)[1] for p in directory.glob("*-of-*")})


def test_prepare_twice_into_one_directory_needs_overwrite(tmp_path, generic_overrides, capsys):
    from mer import cli
    from trainer.data import target_timestamps

    config = tmp_path / "tiny.json"  # a JSON config file, overridden by --set
    config.write_text(json.dumps({"name": "tiny", "data": {"history_length": 10}}))
    out = tmp_path / "out"

    def prepare(num_shards, *extra):
        sets = [arg for o in [*generic_overrides, f"data.num_shards={num_shards}"] for arg in ("--set", o)]
        return cli.main(["prepare", "--config", str(config), "--output_dir", str(out), *sets, *extra, *BEAM_CLI_ARGS])

    assert prepare(4) == 0
    capsys.readouterr()
    assert prepare(2) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mer prepare: error: output directory {out} already holds") and "--overwrite" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _shard_counts(out / "train") == ["00004.tfrecord"]  # the first run is untouched
    assert prepare(2, "--overwrite") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shards"]["train/implicit"] == 2 and manifest["config"]["data"]["history_length"] == 10
    for directory, name in (("train", "train/implicit"), ("eval", "eval/implicit"), ("items", "items/items")):
        assert _shard_counts(out / directory) == [f"{manifest['shards'][name]:05d}.tfrecord"], directory
    assert load_config(str(out / "config.yaml")).data.num_shards == 2
    assert len(target_timestamps(f"{out}/train/implicit-*")) == manifest["counts"]["examples/train/implicit"] == 4


def test_readers_take_only_the_shard_set_the_manifest_names(generic_input):
    import shutil

    from trainer.data import match_files, target_timestamps

    cfg, raw, out = generic_input
    with TestPipeline() as p:
        prepare.build_pipeline(p, cfg, str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shards"] == {"train/implicit": 3, "train/explicit": 3, "eval/implicit": 3,
                                  "eval/explicit": 3, "items/items": 1}
    ours = match_files(f"{out}/train/implicit-*")
    for path in ours:  # a stray set of another run: the same records again, under -of-00005
        shutil.copy(path, path.replace("-of-00003", "-of-00005"))
    assert match_files(f"{out}/train/implicit-*") == ours
    assert len(target_timestamps(f"{out}/train/implicit-*")) == manifest["counts"]["examples/train/implicit"] == 4
    # Without a manifest naming the set, mixed sets are an error, not double the data.
    (out / "manifest.json").unlink()
    with pytest.raises(ValueError, match=r"train/implicit mixes shard sets of two runs \(-of-00003, -of-00005\)"):
        match_files(f"{out}/train/implicit-*")
    (out / "manifest.json").write_text(json.dumps({**manifest, "shards": {"train/implicit": 7}}))
    with pytest.raises(FileNotFoundError, match="names .*train/implicit-\\*-of-00007; found only -of-00003, -of-00005"):
        match_files(f"{out}/train/implicit-*")


def test_beam_counters_equal_the_manifest_counts(generic_input, monkeypatch):
    """Rows read per kind, dead letters per reason and examples per output
    are live Beam counters (Dataflow's job page); at the end they equal the
    manifest's counts."""
    from apache_beam.metrics.metric import MetricsFilter

    from beam import readers

    monkeypatch.setattr(readers, "PROGRESS_ROWS", 4)  # events-a.csv's 11 rows: two updates of 4, then 3
    cfg, raw, out = generic_input
    p = TestPipeline()
    prepare.build_pipeline(p, cfg, str(out))
    result = p.run()
    result.wait_until_finish()
    counters: dict = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace("prepare"))["counters"]:
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + counter.committed
    manifest = json.loads((out / "manifest.json").read_text())
    expected = {f"{kind}_rows_in": manifest["counts"][f"{kind}_rows_in"] for kind in ("events", "items", "follows")}
    expected.update({f"dead_letter/{key}": n for key, n in manifest["dead_letter"].items()})
    expected.update({k: v for k, v in manifest["counts"].items() if k.startswith("examples/")})
    assert {k: v for k, v in counters.items() if v} == {k: v for k, v in expected.items() if v}
    assert counters["events_rows_in"] == 19 and counters["dead_letter/events/bad_json"] == 2
    assert counters["examples/train/implicit"] == 4
