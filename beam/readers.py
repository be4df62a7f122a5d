"""File readers that keep the exact file and line of every row.

Why a per-file DoFn instead of `ReadFromText`: a bad row must be reported
with its file and line, and SPEC §6 orders same-second events by position in
the input. A file is read start-to-end by one worker (logs arrive sharded, so
parallelism comes from the number of files); I/O goes through
`apache_beam.io.filesystems`, so `gs://`, `s3://` and `hdfs://` work unchanged.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from typing import Callable, Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam.records import BadRow, dead_letter, plausible_timestamp
from common.progress import report

DEAD = "dead"
STATS = "stats"
# Namespace of the Beam counters the prepare stages update while they run
# (Dataflow's job page shows them live; the manifest has the final counts).
METRICS_NAMESPACE = "prepare"
# Rows read between updates of a `<kind>_rows_in` counter.
PROGRESS_ROWS = 10_000
# Rows per Parquet record batch (`_iter_parquet`): bounds a reader's memory
# per file; any value gives the same rows and row numbers.
PARQUET_BATCH_ROWS = 65_536


@dataclasses.dataclass(frozen=True)
class TableFormat:
    """How to split a file into rows.

    Attributes:
      kind: `delimited`, `jsonl` or `parquet`.
      delimiter: field separator for `delimited`.
      encoding: text encoding; undecodable lines are dead-lettered.
      columns: fixed column names for header-less files; empty = first line
        is the header.
    """

    kind: str = "delimited"
    delimiter: str = ","
    encoding: str = "utf-8"
    columns: tuple[str, ...] = ()


def format_for_path(path: str) -> TableFormat:
    """Generic-format files are recognised by extension (SPEC §4)."""
    lower = path.lower()
    for suffix in (".gz", ".bz2", ".zst", ".deflate"):
        if lower.endswith(suffix):
            lower = lower[: -len(suffix)]
    if lower.endswith(".csv"):
        return TableFormat("delimited", ",")
    if lower.endswith(".tsv"):
        return TableFormat("delimited", "\t")
    if lower.endswith((".jsonl", ".json", ".ndjson")):
        return TableFormat("jsonl")
    if lower.endswith(".parquet"):
        return TableFormat("parquet")
    raise ValueError(
        f"file {path!r}: unknown format; allowed extensions: .csv .tsv .jsonl .json .ndjson .parquet"
        " (optionally compressed .gz/.bz2)"
    )


def expand_files(patterns: str, what: str, required: bool = True) -> list[str]:
    """Expands comma-separated globs to a sorted file list at construction time.

    Raises:
      FileNotFoundError: a required input matched no file.
    """
    paths: list[str] = []
    for pattern in (p.strip() for p in patterns.split(",")):
        if not pattern:
            continue
        result = FileSystems.match([pattern])[0]
        matched = sorted(m.path for m in result.metadata_list)
        if not matched:
            raise FileNotFoundError(f"{what}: pattern {pattern!r} matched no files")
        paths.extend(matched)
    if required and not paths:
        raise FileNotFoundError(f"{what}: no input files given")
    return sorted(set(paths))


def read_columns(path: str, fmt: TableFormat) -> list[str] | None:
    """The column names of one file: the header line, or the Parquet schema.

    Returns:
      None where a file has no header (JSONL, fixed `columns`, an empty file).

    Raises:
      ValueError: the header or the Parquet footer cannot be read.
    """
    if fmt.columns or fmt.kind == "jsonl":
        return None
    if fmt.kind == "parquet":
        import pyarrow.parquet as pq

        try:
            with FileSystems.open(path) as handle:
                return list(pq.read_schema(handle).names)
        except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...
            raise ValueError(f"{path}: not a readable Parquet file: {str(err).splitlines()[0]}") from None
    with FileSystems.open(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.rstrip(b"\r\n").decode(fmt.encoding)
                fields = next(csv.reader([text], delimiter=fmt.delimiter))
            except (UnicodeDecodeError, csv.Error) as err:
                raise ValueError(f"{path}: line {number}: the header cannot be read: {err}") from None
            return [h.strip().lstrip("\ufeff") for h in fields]
    return None


def check_columns(what: str, paths: list[str], required: tuple[str, ...], fmt: TableFormat | None = None) -> None:
    """Fails fast when a file's header lacks a required column.

    Why before the run: a wrong header (`user,item,ts`) would otherwise
    dead-letter every row of the file and leave a run with no examples.
    Headers are read in parallel (one small read per file; `gs://` works).

    Raises:
      ValueError: `<what> file <path>: header lacks required column(s) ...`.
    """
    import concurrent.futures

    def check(path: str) -> None:
        columns = read_columns(path, fmt or format_for_path(path))
        missing = [c for c in required if columns is not None and c not in columns]
        if missing:
            raise ValueError(f"{what} file {path}: header lacks required column(s) {', '.join(missing)} "
                             f"(has: {', '.join(columns)})")

    with concurrent.futures.ThreadPoolExecutor(min(16, max(1, len(paths)))) as pool:
        for _ in pool.map(check, paths):
            pass


def _iter_parquet(path: str) -> Iterator[tuple[int, dict, dict]]:
    """Yields `(row, row_dict, row_dict)` for every Parquet row, 1-based.

    Why record batches: a worker holds one batch of `PARQUET_BATCH_ROWS`
    rows as Python objects, not the whole file (a decoded table is several
    times its compressed size, and a log shard can be gigabytes). Row
    numbers run on across batches and row groups.
    """
    import pyarrow.parquet as pq

    number = 0
    with FileSystems.open(path) as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                number += 1
                yield number, row, row


def iter_rows(path: str, fmt: TableFormat) -> Iterator[tuple[int, object, object]]:
    """Yields `(line, row_dict_or_None, raw_or_error)` for every record.

    Line numbers are 1-based physical lines (parquet: 1-based row index). A
    row that cannot be split yields `(line, None, BadRow)`.
    """
    if fmt.kind == "parquet":
        yield from _iter_parquet(path)
        return
    header = list(fmt.columns) or None
    with FileSystems.open(path) as handle:
        for number, raw in enumerate(handle, start=1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                text = raw.decode(fmt.encoding)
            except UnicodeDecodeError as err:
                yield number, None, (raw, BadRow("bad_encoding", f"not {fmt.encoding}: {err}"))
                continue
            if fmt.kind == "jsonl":
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as err:
                    yield number, None, (raw, BadRow("bad_json", str(err)))
                    continue
                if not isinstance(row, dict):
                    yield number, None, (raw, BadRow("bad_json", "a line must be a JSON object"))
                    continue
                yield number, row, text
                continue
            try:
                fields = next(csv.reader([text], delimiter=fmt.delimiter))
            except csv.Error as err:
                if header is None:
                    raise ValueError(f"{path}: line {number}: the header cannot be read: {err}") from None
                # e.g. a field over csv.field_size_limit() (131,072 characters)
                reason = "field_too_large" if "field limit" in str(err) else "bad_csv"
                yield number, None, (raw, BadRow(reason, str(err)))
                continue
            if header is None:
                header = [h.strip().lstrip("\ufeff") for h in fields]
                continue
            if len(fields) != len(header):
                yield number, None, (
                    raw,
                    BadRow(
                        "wrong_field_count",
                        f"{len(fields)} fields, header has {len(header)} ({fmt.delimiter.join(header)})",
                    ),
                )
                continue
            yield number, dict(zip(header, fields)), text


class ReadRecords(beam.DoFn):
    """Reads `(kind, file_index, path)` and emits records, dead letters, stats.

    While it reads, the counter `<kind>_rows_in` (namespace
    `METRICS_NAMESPACE`) grows every `PROGRESS_ROWS` rows, so a long read
    shows progress; its final value is the manifest's `counts.<kind>_rows_in`.
    The same amounts go to `common.progress.report`, the launcher's bar
    when this DoFn runs in its process (DirectRunner in_memory).

    One DoFn reads every kind it is given, so records of several kinds can
    leave it in one PCollection (see `beam/prepare.py`: a single producer
    feeding a GroupByKey, no Flatten).

    Args:
      specs: kind (`events`, `items`, `follows`) -> `(mapper, table_format)`;
        `mapper(row_dict, file_index, line) -> record` raises BadRow;
        `table_format` None picks the format from the file extension.
    """

    def __init__(self, specs: dict[str, tuple[Callable, TableFormat | None]]):
        self._specs = specs

    def route(self, kind: str, record, *side_inputs):
        """Hook for subclasses: what to emit for a parsed record."""
        yield record

    def process(self, element, *side_inputs):
        kind, file_index, path = element
        mapper, fmt = self._specs[kind]
        fmt = fmt or format_for_path(path)
        rows = implausible = 0
        progress = beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"{kind}_rows_in")
        for line, row, raw in iter_rows(path, fmt):
            rows += 1
            if rows % PROGRESS_ROWS == 0:
                progress.inc(PROGRESS_ROWS)
                report(METRICS_NAMESPACE, PROGRESS_ROWS, kind)
            if row is None:
                raw_bytes, err = raw
                yield beam.pvalue.TaggedOutput(
                    DEAD, dead_letter(kind, path, line, err.reason, err.detail, raw_bytes)
                )
                continue
            try:
                record = mapper(row, file_index, line)
            except BadRow as err:
                yield beam.pvalue.TaggedOutput(DEAD, dead_letter(kind, path, line, err.reason, err.detail, raw))
                continue
            timestamp = getattr(record, "timestamp", None)
            implausible += timestamp is not None and not plausible_timestamp(timestamp)
            yield from self.route(kind, record, *side_inputs)
        progress.inc(rows % PROGRESS_ROWS)
        report(METRICS_NAMESPACE, rows % PROGRESS_ROWS, kind)
        yield beam.pvalue.TaggedOutput(STATS, (f"{kind}_rows_in", rows))
        if implausible:
            yield beam.pvalue.TaggedOutput(STATS, (f"{kind}_implausible_timestamps", implausible))
        if rows == 0:
            yield beam.pvalue.TaggedOutput(STATS, (f"{kind}_empty_files", 1))


def read_records(pipeline, label: str, files: dict[str, list[str]], specs: dict, dofn=None, side_inputs=()):
    """Reads `files` (kind -> paths) with `dofn` (default `ReadRecords(specs)`).

    Returns:
      `(records, dead, stats)` PCollections.
    """
    listing = [(kind, index, path) for kind in sorted(files) for index, path in enumerate(files[kind])]
    out = (
        pipeline
        | f"{label}Files" >> beam.Create(listing)
        # Reshuffle so several files are read in parallel, not fused into Create.
        | f"{label}Spread" >> beam.Reshuffle()
        | f"{label}Read" >> beam.ParDo(dofn or ReadRecords(specs), *side_inputs).with_outputs(
            DEAD, STATS, main="records")
    )
    return out.records, out[DEAD], out[STATS]
