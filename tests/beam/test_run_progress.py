"""Progress of the Beam runs (`beam/run.py`): rows read per input kind reach the
launcher's bar from an in-process DirectRunner; a remote runner's live counters
are polled while it runs; a finished local run is not."""

from __future__ import annotations

import logging
import os
import types

import pytest

from beam import readers, run
from common import progress

ITEMS = "item_id,topics\na,t1\nb,t2|t1\nc,t3\n"
EVENTS = "user_id,item_id,timestamp\nu1,a,100\nu1,b,200\nu1,c,400\nu2,b,110\nu2,c,120\nu2,a,350\n"


def test_rows_read_reach_the_bar_of_an_in_process_runner_per_kind(tmp_path, monkeypatch):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    (tmp_path / "items.csv").write_text(ITEMS)
    (tmp_path / "events.csv").write_text(EVENTS)
    monkeypatch.setattr(readers, "PROGRESS_ROWS", 4)  # events: 4 rows, then the last 2
    seen = []

    class Bar(progress.Progress):
        def update(self, n=1, key=None, note=None):
            seen.append((key, n))
            super().update(n, key, note)

    p = beam.Pipeline(options=PipelineOptions(list(run.IN_MEMORY)))
    as_dict = (lambda row, file_index, line: row, None)
    readers.read_records(p, "T", {"events": [str(tmp_path / "events.csv")], "items": [str(tmp_path / "items.csv")]},
                         {"events": as_dict, "items": as_dict})
    with Bar("prepare (Beam)", unit="rows", logger=logging.getLogger("mer.test"),
             channel=readers.METRICS_NAMESPACE) as bar:
        run.run_pipeline(p, bar)
    assert sorted(seen) == [("events", 2), ("events", 4), ("items", 3)]
    assert bar.counts == {"events": 6, "items": 3}
    progress.report(readers.METRICS_NAMESPACE, 5, "events")  # the bar is closed: nobody listens
    assert bar.count == 9


class FakeRemoteResult:
    """A Dataflow-like result: running for two polls, then done; live counters each poll."""

    def __init__(self):
        self.polls = 0

    @property
    def state(self):
        return "DONE" if self.polls >= 2 else "RUNNING"

    def metrics(self):
        self.polls += 1
        counter = lambda name, value: types.SimpleNamespace(  # noqa: E731
            key=types.SimpleNamespace(metric=types.SimpleNamespace(name=name)), attempted=value)
        counters = [counter("events_rows_in", 10_000 * self.polls), counter("items_rows_in", 50),
                    counter("dead_letter/events/bad_timestamp", 3)]
        return types.SimpleNamespace(query=lambda _filter: {"counters": counters})

    def wait_until_finish(self):
        return self.state


def test_a_remote_runner_is_polled_for_its_live_counters(monkeypatch):
    monkeypatch.setattr(run, "POLL_S", 0)
    result = FakeRemoteResult()
    seen = []

    class Bar(progress.Progress):
        def set(self, count=None, note=None, counts=None):
            seen.append(dict(counts))
            super().set(count, note, counts)

    with Bar("prepare (Beam)", unit="rows", logger=logging.getLogger("mer.test")) as bar:
        assert run.run_pipeline(types.SimpleNamespace(run=lambda: result), bar, "prepare", run._rows_kind) is result
    assert seen == [{"events": 10_000, "items": 50}, {"events": 20_000, "items": 50}]
    assert bar.count == 20_050


@pytest.mark.parametrize("state", ["DONE", "FAILED"])
def test_a_local_runner_is_not_polled(state):
    result = types.SimpleNamespace(state=state, wait_until_finish=lambda: state,
                                   metrics=lambda: pytest.fail("polled a finished run"))
    bar = progress.Progress("x", logger=logging.getLogger("mer.test"))
    with bar:
        assert run.run_pipeline(types.SimpleNamespace(run=lambda: result), bar, "prepare", run._rows_kind) is result


def test_the_local_default_runs_on_the_fn_api_runner_and_never_tries_prism(monkeypatch):
    """Without `--runner`, `mer prepare` / `embed-items` run where the tests
    run them. `--runner=DirectRunner` first tries Prism (here its download
    fails and it falls back; with GitHub reachable Prism would run it)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.runners.portability import prism_runner
    from apache_beam.testing.util import assert_that, equal_to

    tried = []

    def no_prism(self, pipeline, options):
        tried.append(options.view_as(StandardOptions).runner)
        raise RuntimeError("Prism is not what mer's local default runs on")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", no_prism)
    for args in (["--direct_num_workers=1"], ["--runner=DirectRunner", "--direct_running_mode=in_memory"]):
        options = run.pipeline_options(args)
        with beam.Pipeline(options=options) as p:
            assert_that(p | beam.Create([1, 2, 3]) | beam.Map(lambda x: 2 * x), equal_to([2, 4, 6]))
    assert run.pipeline_options([]).view_as(StandardOptions).runner == run.LOCAL_RUNNER == "beam.run.LocalRunner"
    assert tried == ["DirectRunner"]  # only the explicit DirectRunner run tried Prism


def test_the_local_default_hands_the_pipeline_options_to_its_worker_processes():
    """A bare FnApiRunner starts its workers with no options: no log level,
    no file-system options (hdfs://, S3 endpoints). Here the workers' log
    level, which `pipeline_options` sets to WARNING, shows they got them."""
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    options = run.pipeline_options(["--direct_num_workers=2"])  # multi-process: separate worker processes
    with beam.Pipeline(options=options) as p:
        levels = (p | beam.Create([0, 1]) | beam.Reshuffle()
                  | beam.Map(lambda _: (os.getpid(), logging.getLogger().getEffectiveLevel())))
        assert_that(levels | beam.Map(lambda pid_level: pid_level[1]), equal_to([logging.WARNING] * 2))
        launcher = os.getpid()
        assert_that(levels | beam.Map(lambda pid_level, launcher=launcher: pid_level[0] != launcher),
                    equal_to([True] * 2), label="InWorkers")
