"""Server-side batching of concurrent Predict requests (TF Serving's
`--enable_batching`).

One `BatchScheduler` per (model, version, signature). Requests whose inputs
agree on dtype and on every dimension but the first, and that ask for the
same outputs, are concatenated along dim 0, run once and split back. Why:
one session run of 32 rows costs far less than 32 runs of one row.
Anything that cannot join a batch (different shapes, no common dim 0, more
rows than `max_batch_size`) runs on its own, so batching never changes a
result and never refuses a request TF Serving would answer.

Padding of variable-length inputs (`pad_variable_length_inputs`) is not
done: TF Serving pads with the tensor's first element, which changes what a
history model computes; requests of different widths run in separate
batches instead.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable

import grpc
import numpy as np

from serving.serving_error import ServingError
from serving.server_config import BatchingOptions

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]
RunFn = Callable[[Feeds, tuple[str, ...]], Feeds]

_STOP = object()


@dataclasses.dataclass
class _Task:
    feeds: Feeds
    outputs: tuple[str, ...]
    rows: int
    key: tuple
    enqueued_at: float
    future: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)


@dataclasses.dataclass
class BatchStats:
    """Counters of one scheduler (or their sum over a server).

    Attributes:
      batches: session runs made for batched tasks.
      tasks: requests that went through the queue.
      tasks_in_shared_batches: requests that shared their run with another.
      largest_batch_tasks: most requests merged into one run.
    """

    batches: int = 0
    tasks: int = 0
    tasks_in_shared_batches: int = 0
    largest_batch_tasks: int = 0

    def add(self, other: BatchStats) -> BatchStats:
        return BatchStats(self.batches + other.batches, self.tasks + other.tasks,
                          self.tasks_in_shared_batches + other.tasks_in_shared_batches,
                          max(self.largest_batch_tasks, other.largest_batch_tasks))


def batch_rows(feeds: Feeds) -> int | None:
    """The common dim 0 of all inputs, or None when they have none (not batchable)."""
    sizes = {value.shape[0] if value.ndim else None for value in feeds.values()}
    if len(sizes) != 1 or None in sizes:
        return None
    size = sizes.pop()
    return size if size > 0 else None


def _batch_key(feeds: Feeds, outputs: tuple[str, ...]) -> tuple:
    return outputs, tuple(sorted((name, value.dtype.str, value.shape[1:]) for name, value in feeds.items()))


class BatchScheduler:
    """Batches compatible concurrent calls of one signature.

    Args:
      run: `run(feeds, outputs) -> {output: array}`, one session run; every
        output must keep dim 0 = the rows fed (else the batch is re-run
        request by request).
      options: the batching parameters.
      name: for logs and thread names, e.g. "user_implicit/3/serving_default".
    """

    def __init__(self, run: RunFn, options: BatchingOptions, name: str):
        self._run = run
        self._options = options
        self._name = name
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._enqueued_rows = 0
        self._closed = False
        self._stats = BatchStats()
        self._free_threads = threading.Semaphore(options.num_batch_threads)
        self._pool = concurrent.futures.ThreadPoolExecutor(options.num_batch_threads,
                                                           thread_name_prefix=f"batch-{name}")
        self._worker = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._worker.start()

    @property
    def stats(self) -> BatchStats:
        with self._lock:
            return dataclasses.replace(self._stats)

    def run(self, feeds: Feeds, outputs: tuple[str, ...]) -> Feeds:
        """Runs `feeds` in a batch with other callers when possible.

        Returns:
          `{output: array}` for this caller's rows only.

        Raises:
          ServingError: UNAVAILABLE when the queue is full, or the run's error.
        """
        rows = batch_rows(feeds)
        if rows is None or rows > self._options.max_batch_size:
            return self._run(feeds, outputs)
        if self._options.batch_timeout_micros == 0 and self._queue.empty() and self._free_threads.acquire(False):
            # Timeout 0 means a batch runs as soon as a thread is free: with
            # none waiting, this request is that batch; run it here, without
            # the hops to the batching threads.
            try:
                with self._lock:
                    self._stats.tasks += 1
                    self._stats.batches += 1
                    self._stats.largest_batch_tasks = max(self._stats.largest_batch_tasks, 1)
                return self._run(feeds, outputs)
            finally:
                self._free_threads.release()
        task = _Task(feeds, outputs, rows, _batch_key(feeds, outputs), time.monotonic())
        with self._lock:
            if self._closed:
                run_alone = True
            else:
                run_alone = False
                limit = self._options.max_enqueued_batches * self._options.max_batch_size
                if self._enqueued_rows + rows > limit:
                    raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                       f"The batch scheduling queue to which this task was submitted is full "
                                       f"({self._name}: {self._enqueued_rows} rows enqueued, limit {limit})")
                self._enqueued_rows += rows
                self._stats.tasks += 1
                self._queue.put(task)
        if run_alone:
            return self._run(feeds, outputs)
        return task.future.result()

    def close(self) -> None:
        """Runs what is queued, then stops the worker and the batch threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._worker.join()
        self._pool.shutdown(wait=True)

    def _loop(self) -> None:
        carry = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _STOP:
                return
            # A batch is formed only when a thread can run it, so requests that
            # arrive while every thread is busy join the next batch.
            self._free_threads.acquire()
            batch = [first]
            try:
                batch, carry = self._gather(first)
                with self._lock:
                    self._enqueued_rows -= sum(task.rows for task in batch)
                self._pool.submit(self._run_batch, batch)
            except BaseException as err:  # noqa: BLE001  (never leave a request waiting)
                self._free_threads.release()
                for task in batch:
                    if not task.future.done():
                        task.future.set_exception(err)

    def _gather(self, first: _Task) -> tuple[list[_Task], object]:
        """Adds queued compatible tasks to `first` until full or timed out.

        Returns:
          The batch and the first task that did not fit (or None).
        """
        batch, rows = [first], first.rows
        deadline = first.enqueued_at + self._options.batch_timeout_micros / 1e6
        while rows < self._options.max_batch_size:
            wait = deadline - time.monotonic()
            try:
                task = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if task is _STOP or task.key != first.key or rows + task.rows > self._options.max_batch_size:
                return batch, task
            batch.append(task)
            rows += task.rows
        return batch, None

    def _run_batch(self, batch: list[_Task]) -> None:
        try:
            with self._lock:
                self._stats.batches += 1
                if len(batch) > 1:
                    self._stats.tasks_in_shared_batches += len(batch)
                self._stats.largest_batch_tasks = max(self._stats.largest_batch_tasks, len(batch))
            if len(batch) == 1:
                self._run_alone(batch[0])
            else:
                self._run_merged(batch)
        except BaseException as err:  # noqa: BLE001  (never leave a request waiting)
            for task in batch:
                if not task.future.done():
                    task.future.set_exception(err)
        finally:
            self._free_threads.release()

    def _run_alone(self, task: _Task) -> None:
        try:
            task.future.set_result(self._run(task.feeds, task.outputs))
        except BaseException as err:  # noqa: BLE001  (handed to the waiting request)
            task.future.set_exception(err)

    def _run_merged(self, batch: list[_Task]) -> None:
        rows = sum(task.rows for task in batch)
        padded = self._padded_size(rows)
        feeds = {name: _concat([task.feeds[name] for task in batch], padded - rows)
                 for name in batch[0].feeds}
        try:
            outputs = self._run(feeds, batch[0].outputs)
        except Exception as err:  # noqa: BLE001
            # One request's data may fail the run; re-run alone so only it fails.
            log.debug("%s: batch of %d failed (%s); running its requests alone", self._name, len(batch), err)
            outputs = None
        if outputs is None or any(v.ndim == 0 or v.shape[0] != padded for v in outputs.values()):
            for task in batch:
                self._run_alone(task)
            return
        start = 0
        for task in batch:
            task.future.set_result({name: value[start:start + task.rows] for name, value in outputs.items()})
            start += task.rows

    def _padded_size(self, rows: int) -> int:
        """The smallest allowed batch size >= rows (rows if none are configured)."""
        return next((size for size in self._options.allowed_batch_sizes if size >= rows), rows)


def _concat(values: list[np.ndarray], padding: int) -> np.ndarray:
    """Concatenates along dim 0, then repeats the first row `padding` times
    (TF Serving pads a batch up to an allowed size with the first row)."""
    if padding:
        values = values + [np.repeat(values[0][:1], padding, axis=0)]
    return np.concatenate(values, axis=0)
