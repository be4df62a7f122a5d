"""`serving/batch_scheduler.py` with `batch_timeout_micros: 0` (the export's
default): a lone request runs at once in its caller's thread; requests that
arrive while every batch thread is busy are batched, and every caller gets
its own rows."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import numpy as np

from serving.batch_scheduler import BatchScheduler
from serving.server_config import BatchingOptions


class SlowDouble:
    """A session stand-in: doubles `x`, records the thread and the rows of each run."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.runs: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, feeds, outputs):
        with self.lock:
            self.runs.append((threading.current_thread().name, len(feeds["x"])))
        time.sleep(self.seconds)
        return {"y": feeds["x"] * 2}


def test_a_lone_request_runs_in_the_callers_thread():
    run = SlowDouble(0.0)
    scheduler = BatchScheduler(run, BatchingOptions(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1),
                               "m/1/serving_default")
    try:
        out = scheduler.run({"x": np.array([[1.0], [2.0]])}, ("y",))
    finally:
        scheduler.close()
    np.testing.assert_array_equal(out["y"], [[2.0], [4.0]])
    assert run.runs == [(threading.current_thread().name, 2)]
    assert scheduler.stats.tasks == 1 and scheduler.stats.batches == 1


def test_requests_arriving_while_the_thread_is_busy_are_batched():
    run = SlowDouble(0.2)
    scheduler = BatchScheduler(run, BatchingOptions(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1),
                               "m/1/serving_default")
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            first = pool.submit(scheduler.run, {"x": np.array([[0.0]])}, ("y",))
            time.sleep(0.05)  # the first one holds the only batch thread
            rest = [pool.submit(scheduler.run, {"x": np.array([[float(i)]])}, ("y",)) for i in range(1, 6)]
            results = [first.result(10)] + [f.result(10) for f in rest]
    finally:
        scheduler.close()
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out["y"], [[2.0 * i]])
    assert run.runs[0][1] == 1
    # The 5 waiting requests ran in far fewer than 5 session runs.
    assert len(run.runs) <= 3, run.runs
    assert scheduler.stats.tasks_in_shared_batches >= 4
