"""Readers keep file + line and handle every generic format."""

import functools

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam import mappers
from beam.readers import TableFormat, format_for_path, iter_rows
from beam.records import BadRow


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
