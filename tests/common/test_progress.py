"""`common/progress.py`: a redrawn bar on a TTY, throttled log lines elsewhere, one final line,
nesting, the Beam DoFn channel, and the Keras epoch callback on a tiny fit."""

import io
import logging

import pytest

from common import progress
from common.progress import Progress

LOGGER = "mer.test_progress"


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def clock(monkeypatch):
    """A fake monotonic clock: `clock.now` seconds, moved by the test."""

    class Clock:
        now = 1000.0

    monkeypatch.setattr(progress, "_now", lambda: Clock.now)
    monkeypatch.setattr(progress, "_logged", float("-inf"))
    return Clock


@pytest.fixture
def lines(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    return lambda: [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_not_a_tty_logs_one_line_per_interval_and_the_final_line(clock, lines):
    stream = io.StringIO()
    with Progress("epoch 1/2", 40, "steps", logging.getLogger(LOGGER), stream, every_s=10) as bar:
        for _ in range(35):  # one step a second: lines at 10, 20 and 30 s
            clock.now += 1
            bar.update()
    got = lines()
    assert stream.getvalue() == ""  # nothing drawn
    assert len(got) == 4, got
    # At 10 s: 10 of 40 steps at 1 step/s, 30 s to go.
    assert got[0] == "epoch 1/2: 10/40 steps (25%); 1 steps/s, 0:10 elapsed, ETA 0:30"
    assert got[2].startswith("epoch 1/2: 30/40 steps (75%)")
    assert got[3] == "epoch 1/2: 35/40 steps in 35.0 s (1 steps/s)"


def test_a_tty_draws_a_bar_in_place_and_logs_only_the_final_line(clock, lines):
    stream = Terminal()
    with Progress("embed items", 8, "items", logging.getLogger(LOGGER), stream, every_s=0) as bar:
        for _ in range(4):
            clock.now += 2
            bar.update(2, note="x")
        drawn = stream.getvalue()
    assert drawn.count("\r") >= 4 and "\n" not in drawn
    # 4 of 8 items after 4 s: the bar is half full, 2 items/s, 4 s left.
    assert "embed items [==========>         ] 4/8 items (50%) · x · 1/s · 0:04<0:04" in drawn
    assert "8/8 items (100%)" in drawn and stream.getvalue().endswith("\r")  # erased at the end
    assert lines() == ["embed items: 8/8 items in 8.0 s (1 items/s); x"]


def test_nested_bars_only_the_innermost_draws(clock, lines):
    stream = Terminal()
    log = logging.getLogger(LOGGER)
    with Progress("[stage]", logger=log, stream=stream, every_s=0) as outer:
        clock.now += 1
        outer.refresh()
        with Progress("inner", 3, "steps", log, stream, every_s=0) as inner:
            before = len(stream.getvalue())
            clock.now += 1
            outer.refresh()  # hidden behind the inner bar
            assert len(stream.getvalue()) == before
            inner.update(3)
            assert "inner [" in stream.getvalue()[before:]
        outer.close("[stage] done")
    assert lines() == ["inner: 3/3 steps in 1.0 s (3 steps/s)", "[stage] done"]


def test_off_a_tty_an_outer_bar_waits_a_whole_interval_after_an_inner_line(clock, lines):
    log = logging.getLogger(LOGGER)
    with Progress("[train]", logger=log, stream=io.StringIO(), every_s=30) as outer:
        with Progress("epoch 1/1", 2, "steps", log, io.StringIO(), every_s=30) as inner:
            clock.now += 40
            outer.refresh()  # the inner bar is open: the outer one is silent
            inner.update(2)  # 40 s: a throttled line
        clock.now += 1
        outer.refresh()  # 41 s since it opened, but 1 s since a line: silent
        clock.now += 29
        outer.refresh()
    assert lines() == ["epoch 1/1: 2/2 steps (100%); 0.1 steps/s, 0:40 elapsed", "epoch 1/1: 2/2 steps in 40.0 s (0.1 steps/s)",
                       "[train]: running, 1:10 elapsed", "[train]: done in 70.0 s"]


def test_a_failure_logs_no_final_line_and_closes_inner_bars(lines):
    log = logging.getLogger(LOGGER)
    with pytest.raises(RuntimeError):
        with Progress("outer", logger=log, stream=io.StringIO()):
            Progress("left open by the error", logger=log, stream=io.StringIO())
            raise RuntimeError("boom")
    assert lines() == [] and progress._open == []


def test_nothing_is_shown_when_info_is_off(clock):
    stream = Terminal()
    log = logging.getLogger("mer.test_progress_quiet")
    log.setLevel(logging.WARNING)
    with Progress("quiet", 5, logger=log, stream=stream, every_s=0) as bar:
        bar.update(5)
    assert stream.getvalue() == "" and not bar.enabled


def test_a_log_line_first_erases_a_drawn_bar(clock, lines):
    stream = Terminal()
    handler = logging.StreamHandler(stream)
    handler.addFilter(progress.make_room)
    log = logging.getLogger("mer.test_progress_room")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with Progress("bar", 4, logger=logging.getLogger(LOGGER), stream=stream, every_s=0) as bar:
            bar.update(1)
            log.warning("a warning")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    # The bar, then blanks over it and back to column 0, then the warning on its own line.
    assert "bar [" in text and f"\r{' ' * len(text.split(chr(13))[1])}\ra warning\n" in text


def test_report_feeds_the_bar_listening_on_its_channel_else_nothing():
    progress.report("nobody", 5, "events")  # no bar: a no-op, as in a Beam worker process
    with Progress("prepare", unit="rows", logger=logging.getLogger(LOGGER), stream=io.StringIO(),
                  channel="test-channel") as bar:
        progress.report("test-channel", 10_000, "events")
        progress.report("test-channel", 7, "items")
        progress.report("test-channel", 3, "events")
    assert (bar.count, bar.counts) == (10_010, {"events": 10_003, "items": 7})
    assert "test-channel" not in progress._channels
    assert bar.summary().startswith("prepare: 10,010 rows (events 10,003, items 7) in ")


def test_the_keras_callback_draws_each_epoch_and_ends_it_with_the_validation_value(lines):
    import numpy as np

    from trainer.layers._keras import keras

    class FakeValidation(keras.callbacks.Callback):  # what trainer.task's ValidationHitRate does
        def on_epoch_end(self, epoch, logs=None):
            logs["val_hr_at_10"] = 0.25 * (epoch + 1)

    counted = []

    class Steps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            counted.append(progress._open[-1].count)

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(2,))])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((12, 2), np.float32), np.zeros((12, 1), np.float32)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0,
              callbacks=[FakeValidation(), progress.epoch_callback(keras.callbacks.Callback, logging.getLogger(LOGGER)),
                         Steps()])
    got = lines()
    assert counted == [1, 2, 3, 1, 2, 3]  # 12 records / batch 4 = 3 steps an epoch
    assert len(got) == 2, got
    for epoch, line in enumerate(got, 1):
        assert line.startswith(f"epoch {epoch}/2: 3/3 steps in "), line
        assert " steps/s); loss " in line and line.endswith(f", val_hr_at_10 {0.25 * epoch:.4f}"), line
