"""Adapters for the raw GroupLens files, as GroupLens ships them.

- `ml-latest-small`: `ratings.csv` (userId,movieId,rating,timestamp; CRLF) and
  `movies.csv` (movieId,title,genres with `|`).
- `ml-100k`: `u.data` (tab-separated user, item, rating, timestamp; no
  header) and `u.item` (latin-1, `|`-separated, 19 genre flags).

Topics = genres. A rating <= `negative_rating_max` (default 2) is a negative
action. Item features: the release decade (categorical); an item with no
genre or no parseable year has missing features and is invalid for VA-FPI.
Followed topics and source topics are derived by the prepare pipeline (see
`beam/follows.py`), standing in for sign-up follows.
"""

from __future__ import annotations

import re

from beam.readers import TableFormat
from beam.records import BadRow, Event, Item, parse_timestamp, required

# The 19 genre flags of u.item, in file order (also listed in u.genre).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ML100K_DATA_FORMAT = TableFormat(
    "delimited", "\t", "utf-8", ("user_id", "item_id", "rating", "timestamp")
)
ML100K_ITEM_FORMAT = TableFormat(
    "delimited",
    "|",
    "latin-1",
    ("item_id", "title", "release_date", "video_release_date", "url") + ML100K_GENRES,
)
ML_LATEST_FORMAT = TableFormat("delimited", ",", "utf-8")
CATEGORICAL = ("decade",)
_YEAR = re.compile(r"(\d{4})")


def _rating_event(row, file_index, line, user, item, negative_rating_max) -> Event:
    try:
        rating = float(required(row, "rating"))
    except ValueError:
        raise BadRow("bad_number", f"rating={row.get('rating')!r} is not a number") from None
    ts = required(row, "timestamp")
    if not ts.isdigit():
        raise BadRow("bad_timestamp", f"timestamp {ts!r}: expected unix seconds")
    return Event(user, item, parse_timestamp(ts), rating <= negative_rating_max, "", file_index, line)


def latest_event(row, file_index, line, negative_rating_max: float) -> Event:
    return _rating_event(
        row, file_index, line, required(row, "userId"), required(row, "movieId"), negative_rating_max
    )


def ml100k_event(row, file_index, line, negative_rating_max: float) -> Event:
    return _rating_event(
        row, file_index, line, required(row, "user_id"), required(row, "item_id"), negative_rating_max
    )


def _decade(text: str) -> str:
    years = _YEAR.findall(text or "")
    return f"{int(years[-1]) // 10 * 10}s" if years else ""


def _movie(item_id: str, genres: tuple[str, ...], decade: str, file_index: int, line: int) -> Item:
    return Item(item_id, genres, (), (("decade", decade),), bool(genres and decade), file_index, line)


def latest_item(row, file_index, line) -> Item:
    genres = tuple(
        g for g in (row.get("genres") or "").split("|") if g and g != "(no genres listed)"
    )
    return _movie(required(row, "movieId"), genres, _decade(row.get("title", "")), file_index, line)


def ml100k_item(row, file_index, line) -> Item:
    flags = []
    for genre in ML100K_GENRES:
        value = (row.get(genre) or "").strip()
        if value not in ("0", "1"):
            raise BadRow("bad_flag", f"genre flag {genre}={value!r}; allowed 0 or 1")
        flags.append(value == "1")
    genres = tuple(g for g, on in zip(ML100K_GENRES, flags) if on and g != "unknown")
    decade = _decade(row.get("release_date", "")) or _decade(row.get("title", ""))
    return _movie(required(row, "item_id"), genres, decade, file_index, line)
