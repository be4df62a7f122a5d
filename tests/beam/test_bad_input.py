"""Bad input as a user feeds it: one bad row is a dead letter, a bad file or
directory is one line naming it, and a run without examples fails.

Issue 16 ("One bad row must not crash the run"). The world is 3 items and 2
users (u1 trains on a@100 -> b@200, u2 on b@110 -> c@120); every other row
is bad in one way. Split at T = 300.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam import mappers
from beam.readers import check_columns, format_for_path, iter_rows
from beam.records import BadRow, parse_timestamp
from mer import cli
from mer_testing import BEAM_CLI_ARGS

ITEMS = "item_id,topics\na,t1\nb,t2|t1\nc,t3\n"
HUGE = "x" * 140_000  # over csv.field_size_limit() = 131,072
EVENTS_CSV = (
    "user_id,item_id,timestamp,action,source_topic\n"
    "u1,a,100,click,\n"
    "u1,b,200,click,\n"
    "u1,c,inf,click,\n"  # line 4: bad_timestamp (OverflowError today)
    "u1,c,1e30,click,\n"  # line 5: bad_timestamp (int64 overflow in the dedup step today)
    "u1,c,10000000000000000000,click,\n"  # line 6: bad_timestamp
    f"u1,c,250,click,{HUGE}\n"  # line 7: field_too_large (_csv.Error today)
    "u3,a,-5,click,\n"  # negative: kept, counted, warned
    "u3,b,1772332657000,click,\n"  # milliseconds (year 58000): kept, counted, warned
)
EVENTS_JSONL = (
    '{"user_id": "u2", "item_id": "b", "timestamp": 110}\n'
    '{"user_id": "u2", "item_id": "c", "timestamp": 120}\n'
    '{"user_id": "u2", "item_id": "a", "timestamp": Infinity}\n'  # line 3: bad_timestamp
    '{"user_id": ["u2", "u4"], "item_id": "a", "timestamp": 130}\n'  # line 4: wrong_type
    '{"user_id": "u2", "item_id": {"id": "a"}, "timestamp": 130}\n'  # line 5: wrong_type
    '{"user_id": "u2", "item_id": "a", "timestamp": 130, "source_topic": ["t1"]}\n'  # line 6: wrong_type
)


def _world(tmp_path, events_csv=EVENTS_CSV, events_jsonl=EVENTS_JSONL, items=ITEMS):
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    (raw / "items.csv").write_text(items)
    (raw / "events-a.csv").write_text(events_csv)
    (raw / "events-b.jsonl").write_text(events_jsonl)
    sets = ["data.source.format=generic", f"data.source.events={raw}/events-*", f"data.source.items={raw}/items.csv",
            "data.source.follows=''", "data.source.item_vector_dim=0", "data.source.item_categorical_columns=[]",
            "data.split.mode=timestamp", "data.split.timestamp=300", "data.num_shards=1", "data.min_history=1"]
    return raw, [arg for s in sets for arg in ("--set", s)]


def _prepare(out, sets, *extra):
    return cli.main(["prepare", "--config", "synthetic-small", "--output_dir", str(out), *sets, *extra, *BEAM_CLI_ARGS])


def _one_line_error(capsys, code_expected, got, starts):
    err = capsys.readouterr().err
    assert got == code_expected, err
    assert err.startswith(f"mer prepare: error: {starts}"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---- one bad row: unit level ----

@pytest.mark.parametrize("value, detail", [
    ("inf", "not a finite number"), ("Infinity", "not a finite number"), ("-inf", "not a finite number"),
    ("nan", "not a finite number"), (float("inf"), "not a finite number"), (float("nan"), "not a finite number"),
    ("1e30", "out of range"), (1e30, "out of range"), ("10000000000000000000", "out of range"),
    (10**19, "out of range"), ("9007199254740992", "out of range"),  # 2**53
])
def test_unrepresentable_timestamps_are_bad_rows(value, detail):
    with pytest.raises(BadRow) as err:
        parse_timestamp(value)
    assert err.value.reason == "bad_timestamp" and detail in err.value.detail


def test_timestamps_in_range_keep_their_exact_value():
    assert parse_timestamp("9007199254740991") == 2**53 - 1  # integer strings are parsed exactly
    assert parse_timestamp("-5") == -5 and parse_timestamp(1772332657.9) == 1772332657
    assert parse_timestamp("2026-03-02T01:52:04Z") == 1772416324


def test_a_field_over_the_csv_limit_is_a_bad_row(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text(f"user_id,item_id,timestamp\nu1,{HUGE},1\nu1,a,2\n")
    rows = list(iter_rows(str(path), format_for_path(str(path))))
    assert [(line, row) for line, row, _ in rows[1:]] == [(3, {"user_id": "u1", "item_id": "a", "timestamp": "2"})]
    line, row, (raw, err) = rows[0]
    assert (line, row, err.reason) == (2, None, "field_too_large") and "131072" in err.detail


@pytest.mark.parametrize("field, value", [
    ("user_id", ["u1", "u2"]), ("item_id", {"id": "a"}), ("item_id", 1.5), ("user_id", True),
    ("action", ["click"]), ("source_topic", {"t": 1}), ("timestamp", [100]),
])
def test_jsonl_values_of_the_wrong_type_are_bad_rows_not_strings(field, value):
    row = {"user_id": "u1", "item_id": "a", "timestamp": 100, field: value}
    with pytest.raises(BadRow) as err:
        mappers.event_from_row(row, 0, 1, negative_actions=())
    assert err.value.reason == "wrong_type" and err.value.detail.startswith(f"{field}: expected")


def test_integer_ids_and_numeric_timestamps_still_work():
    event = mappers.event_from_row({"user_id": 7, "item_id": 42, "timestamp": 100.5}, 0, 1, negative_actions=())
    assert (event.user_id, event.item_id, event.timestamp) == ("7", "42", 100)
    with pytest.raises(BadRow, match="wrong_type"):
        mappers.item_from_row({"item_id": "a", "topics": ["t1", {"x": 1}]}, 0, 1, "v", 0, (), ())


# ---- one bad row: the whole run ----

def test_bad_rows_are_dead_letters_and_the_run_succeeds(tmp_path, capsys):
    raw, sets = _world(tmp_path)
    out = tmp_path / "out"
    assert _prepare(out, sets) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "mer prepare: warning: 2 event rows have timestamps outside 1970-01-01..2100-01-01" in err
    dead = sorted((d["file"].rsplit("/", 1)[1], d["line"], d["reason"]) for f in (out / "dead_letter").glob("*.jsonl")
                  for d in map(json.loads, f.read_text().splitlines()))
    assert dead == [
        ("events-a.csv", 4, "bad_timestamp"), ("events-a.csv", 5, "bad_timestamp"),
        ("events-a.csv", 6, "bad_timestamp"), ("events-a.csv", 7, "field_too_large"),
        ("events-b.jsonl", 3, "bad_timestamp"), ("events-b.jsonl", 4, "wrong_type"),
        ("events-b.jsonl", 5, "wrong_type"), ("events-b.jsonl", 6, "wrong_type"),
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["balance"]["events"] == {"in": 14, "kept": 6, "dead": 8, "ok": True}
    assert manifest["counts"]["events_implausible_timestamps"] == 2
    assert manifest["counts"]["examples/train/implicit"] == 2  # u1 b, u2 c (u3 b, in milliseconds, is eval)
    assert (out / "config.yaml").exists()


# ---- a bad file or directory: one line naming it, before the run ----

def test_a_header_without_the_required_columns_fails_fast(tmp_path, capsys):
    raw, sets = _world(tmp_path, events_csv="user,item,ts\nu1,a,100\n")
    got = _prepare(tmp_path / "out", sets)
    _one_line_error(capsys, 2, got, f"data.source.events file {raw}/events-a.csv: header lacks required column(s) "
                                    "user_id, item_id, timestamp (has: user, item, ts)")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_parquet_schema_without_user_id_or_a_corrupt_parquet_file_is_one_error(tmp_path):
    good, bad = tmp_path / "e1.parquet", tmp_path / "e2.parquet"
    pq.write_table(pa.table({"user_id": ["u"], "item_id": ["a"], "timestamp": [1]}), good)
    pq.write_table(pa.table({"user": ["u"], "item_id": ["a"], "timestamp": [1]}), bad)
    check_columns("data.source.events", [str(good)], mappers.EVENT_COLUMNS)
    with pytest.raises(ValueError, match=f"data.source.events file {bad}: header lacks required column.s. user_id "):
        check_columns("data.source.events", [str(good), str(bad)], mappers.EVENT_COLUMNS)
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ValueError, match=f"{bad}: not a readable Parquet file"):
        check_columns("data.source.events", [str(bad)], mappers.EVENT_COLUMNS)


def test_configured_item_feature_columns_must_be_in_the_header(tmp_path, capsys):
    raw, sets = _world(tmp_path)
    got = _prepare(tmp_path / "out", [*sets, "--set", "data.source.item_vector_dim=2"])
    _one_line_error(capsys, 2, got, f"data.source.items file {raw}/items.csv: header lacks required column(s) content")


def test_a_run_without_training_examples_fails_with_one_line(tmp_path, capsys):
    # Every event names an item the table does not have: all dead-lettered.
    raw, sets = _world(tmp_path, items="item_id,topics\nx,t1\n")
    out = tmp_path / "out"
    got = _prepare(out, sets)
    _one_line_error(capsys, 1, got, "no training examples (0 examples in all): 14 event rows in, 0 kept, cutoff 300.0; "
                                    "dead letters: events/unknown_item 6, events/bad_timestamp 4, events/wrong_type 3 "
                                    f"(see {out}/dead_letter)")
    assert (out / "manifest.json").exists() and not (out / "config.yaml").exists()


def test_a_missing_input_path_is_one_line(tmp_path, capsys):
    raw, sets = _world(tmp_path)
    (raw / "items.csv").unlink()
    got = _prepare(tmp_path / "out", sets)
    _one_line_error(capsys, 2, got, f"data.source.items: pattern '{raw}/items.csv' matched no files")


def test_an_unwritable_output_directory_is_one_line(tmp_path, capsys, monkeypatch):
    raw, sets = _world(tmp_path)
    (tmp_path / "a_file").write_text("")
    got = _prepare(tmp_path / "a_file" / "out", sets)
    _one_line_error(capsys, 2, got, f"output directory {tmp_path}/a_file/out is not writable: Not a directory")

    from apache_beam.io.filesystems import FileSystems

    def read_only(path, *args, **kwargs):  # what a read-only mount or bucket says (root ignores chmod)
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(FileSystems, "create", read_only)
    got = _prepare(tmp_path / "ro", sets)
    _one_line_error(capsys, 2, got, f"output directory {tmp_path}/ro is not writable: Permission denied")
    got = _prepare(tmp_path / "ro", sets, "-v")
    err = capsys.readouterr().err
    assert got == 2 and "Traceback" in err and err.strip().endswith("is not writable: Permission denied"), err


def test_a_corrupt_embeddings_shard_is_named(tmp_path):
    import tensorflow as tf

    from beam import embed_items

    def example(row):
        feature = {embed_items.ROW: tf.train.Feature(int64_list=tf.train.Int64List(value=[row])),
                   embed_items.ITEM_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a%d" % row])),
                   embed_items.TOPICS: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"t"])),
                   embed_items.EMBEDDING: tf.train.Feature(float_list=tf.train.FloatList(value=[1.0, 2.0]))}
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    shards = [tmp_path / f"{embed_items.SHARD_PREFIX}-0000{i}-of-00002.tfrecord" for i in range(2)]
    for row, path in enumerate(shards):
        with tf.io.TFRecordWriter(str(path)) as writer:
            writer.write(example(row))
    assert embed_items.read_embeddings(str(tmp_path))["item_ids"] == ["a0", "a1"]
    shards[1].write_bytes(shards[1].read_bytes()[:-7] + b"garbage")
    with pytest.raises(ValueError, match=f"^{shards[1]}: corrupt TFRecord shard"):
        embed_items.read_embeddings(str(tmp_path))
