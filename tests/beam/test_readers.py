"""Readers keep file + line and handle every generic format."""

import functools

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam import mappers
from beam.readers import TableFormat, format_for_path, iter_rows
from beam.records import BadRow, Event, Follow, Item, pack, pack_many, unpack, unpack_many


def test_csv_crlf_lines_and_header(tmp_path):
    path = tmp_path / "e.csv"
    path.write_bytes(b"user_id,item_id\r\nu1,a\r\n\r\nu2,b\r\n")
    rows = [(line, row) for line, row, _ in iter_rows(str(path), format_for_path(str(path)))]
    assert rows == [(2, {"user_id": "u1", "item_id": "a"}), (4, {"user_id": "u2", "item_id": "b"})]


def test_parquet_rows_are_numbered_and_lists_are_topics(tmp_path):
    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item_id": ["a", "b"], "topics": [["x", "y"], []],
                             "vec": [[1.0, 2.0], [3.0, 4.0]]}), path)
    rows = list(iter_rows(str(path), format_for_path(str(path))))
    assert [line for line, _, _ in rows] == [1, 2]
    mapper = functools.partial(mappers.item_from_row, vector_column="vec", vector_dim=2,
                               numeric_columns=(), categorical_columns=())
    items = [mapper(row, 0, line) for line, row, _ in rows]
    assert items[0].topics == ("x", "y") and items[0].content == (1.0, 2.0)
    assert items[1].topics == ()


def test_latin1_fixed_columns(tmp_path):
    path = tmp_path / "u.item"
    path.write_bytes("1|Café (1995)\n".encode("latin-1"))
    ((line, row, _),) = iter_rows(str(path), TableFormat("delimited", "|", "latin-1", ("id", "title")))
    assert row["title"] == "Café (1995)"


def test_unknown_extension_names_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown format; allowed extensions: \.csv"):
        format_for_path("events.xlsx")


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"item_id": "a", "vec": "1 2 3"}, "bad_vector"),
        ({"item_id": "a", "vec": "1 nan"}, "bad_number"),
        ({"item_id": "", "vec": "1 2"}, "missing_field"),
    ],
)
def test_bad_item_rows(row, reason):
    with pytest.raises(BadRow) as err:
        mappers.item_from_row(row, 0, 1, "vec", 2, (), ())
    assert err.value.reason == reason


def test_missing_features_make_item_invalid_not_bad():
    item = mappers.item_from_row({"item_id": "a", "vec": "", "n": "", "cat": "x"}, 0, 1, "vec", 2, ("n",), ("cat",))
    assert not item.features_valid and item.content == (0.0, 0.0, 0.0)


def test_negative_actions_are_configurable():
    row = {"user_id": "u", "item_id": "a", "timestamp": "1", "action": "hide"}
    assert mappers.event_from_row(row, 0, 1, negative_actions=("hide",)).negative
    assert not mappers.event_from_row(row, 0, 1, negative_actions=("dislike",)).negative


def _parquet_items(path, bad_row=None, rows=8):
    """`rows` items in row groups of 3; row `bad_row` (1-based) has a 3-value vector."""
    vectors = [[float(i), 1.0] for i in range(rows)]
    if bad_row:
        vectors[bad_row - 1] = [1.0, 2.0, 3.0]
    pq.write_table(pa.table({"item_id": [f"i{i}" for i in range(rows)], "topics": [["t"]] * rows,
                             "vec": vectors}), path, row_group_size=3)


def test_parquet_streams_in_batches_with_the_whole_table_rows_and_numbers(tmp_path, monkeypatch):
    from beam import readers

    path = tmp_path / "items.parquet"
    _parquet_items(path)
    whole = [(index, row, row) for index, row in enumerate(pq.read_table(path).to_pylist(), start=1)]
    monkeypatch.setattr(readers, "PARQUET_BATCH_ROWS", 2)  # batches of 2 across row groups of 3
    assert list(iter_rows(str(path), format_for_path(str(path)))) == whole


def test_a_bad_parquet_row_in_the_second_batch_is_dead_lettered_at_its_row(tmp_path, monkeypatch):
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from beam import readers

    path = tmp_path / "items.parquet"
    _parquet_items(path, bad_row=5)
    monkeypatch.setattr(readers, "PARQUET_BATCH_ROWS", 3)  # row 5 is the second batch's second row
    mapper = functools.partial(mappers.item_from_row, vector_column="vec", vector_dim=2,
                               numeric_columns=(), categorical_columns=())
    with TestPipeline() as p:
        records, dead, _ = readers.read_records(p, "Items", {"items": [str(path)]}, {"items": (mapper, None)})
        assert_that(records | beam.Map(lambda it: (it.item_id, it.line)),
                    equal_to([(f"i{i}", i + 1) for i in range(8) if i != 4]), label="Kept")
        assert_that(dead | beam.Map(lambda d: (d["file"], d["line"], d["reason"], "i4" in d["raw"])),
                    equal_to([(str(path), 5, "bad_vector", True)]), label="Dead")


RECORDS = [
    ("events", Event("u1", "i\u00e9", 1_700_000_000, True, "", 3, 10**12)),
    ("items", Item("i1", ("a", "b"), (0.25, -1e-30, 3.0), (("color", "red"), ("size", "")), False, 0, 2)),
    ("items", Item("i2", (), (), (), True, 1, 0)),
    ("follows", Follow("u1", "jazz", 0, 7)),
]


@pytest.mark.parametrize("kind, record", RECORDS)
def test_records_cross_a_shuffle_as_bytes_and_come_back_equal(kind, record):
    data = pack(record)
    assert isinstance(data, bytes)
    rebuilt = type(record)(*unpack(data))
    assert rebuilt == record
    assert [type(v) for v in rebuilt] == [type(v) for v in record]  # bool stays bool, floats stay floats


def test_many_records_pack_into_one_value_in_order():
    data = pack_many([(kind, tuple(record)) for kind, record in RECORDS])
    assert isinstance(data, bytes)
    got = [(kind, (Event, Item, Item, Follow)[i](*fields)) for i, (kind, fields) in enumerate(unpack_many(data))]
    assert got == RECORDS
    assert unpack_many(pack_many([])) == []
