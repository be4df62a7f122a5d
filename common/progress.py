"""Progress of long work: a bar redrawn on a terminal, a few log lines elsewhere.

Why: prepare, training epochs, item embedding and index builds run for
minutes. At a terminal a user wants to see how far they are; CI, Vertex and
pytest logs must stay short. So one helper decides from its stream (stderr):

- a TTY: one bar line redrawn in place (count/total, rate, elapsed, ETA);
- anything else: at most one INFO line every `LOG_EVERY_S` seconds.

Either way the work ends with one `logging` INFO line (label, count,
elapsed, rate): today's one progress line per stage. Nothing is drawn or
logged when the logger is not enabled for INFO (a caller that did not run
`common.logs.setup_logging` sees nothing). Bars nest (a demo stage around a
training epoch): only the innermost open one draws.

Beam DoFns cannot reach a bar in the launcher, so they call
`report(channel, key, n)`: it feeds the bar opened with `channel=` when the
DoFn runs in the launcher's process (DirectRunner `in_memory`) and does
nothing in a worker process (multi-process DirectRunner, Dataflow).
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time

LOG_EVERY_S = 30.0  # not a TTY: the most one bar logs
DRAW_EVERY_S = 0.2  # a TTY: the most one bar redraws
BAR_WIDTH = 20

_log = logging.getLogger(__name__)
_now = time.monotonic  # tests replace it
# Process-local state, not options: the open bars (innermost last), the bars
# Beam DoFns of this process report to, the bar now drawn on the terminal.
_lock = threading.RLock()
_open: list[Progress] = []
_channels: dict[str, Progress] = {}
_drawn: Progress | None = None
_logged = float("-inf")  # when a bar last logged a line: an outer bar's next line waits for the inner's


def report(channel: str, n: int = 1, key: str | None = None) -> None:
    """Adds `n` (of `key`) to the bar listening on `channel` in this process, if any."""
    bar = _channels.get(channel)
    if bar is not None:
        bar.update(n, key)


def make_room(record: logging.LogRecord | None = None) -> bool:
    """A logging filter: erases a drawn bar so a log line starts at column 0 (it redraws later)."""
    with _lock:
        if _drawn is not None:
            _drawn._shown = _now()  # no redraw between this erase and the line's write
            _drawn._erase()
    return True


def clock(seconds: float) -> str:
    """`0:07`, `12:34`, `1:02:03`."""
    seconds = int(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _amount(n: float) -> str:
    return f"{n:,.0f}" if float(n).is_integer() or n >= 100 else f"{n:,.1f}"


class Progress:
    """One piece of long work: counts, a bar or throttled lines, a final line.

    Args:
      label: what runs (`epoch 2/3`, `prepare (Beam)`).
      total: the count when done, if known (a bar, a percentage and an ETA).
      unit: what is counted (`steps`, `rows`, `items`).
      logger: where the lines go (default this module's).
      stream: where a bar is drawn (default `sys.stderr`); a bar only if it is a TTY.
      every_s: the most a bar redraws (TTY) or logs (otherwise); default
        `DRAW_EVERY_S` / `LOG_EVERY_S`.
      tick: a thread refreshes it every second, so elapsed time advances and
        the throttled lines come while the caller blocks (a Beam `run()`).
      channel: Beam DoFns in this process report here (`report`).
      initial: the count already done before (a resumed epoch): not in the rate.
    """

    def __init__(self, label: str, total: int | None = None, unit: str = "", logger: logging.Logger | None = None,
                 stream=None, every_s: float | None = None, tick: bool = False, channel: str | None = None,
                 initial: int = 0):
        self.label, self.total, self.unit = label, total, unit
        self.log = logger or _log
        self.stream = stream or sys.stderr
        self.enabled = self.log.isEnabledFor(logging.INFO)
        self.tty = self.enabled and _is_tty(self.stream)
        self.every_s = every_s if every_s is not None else (DRAW_EVERY_S if self.tty else LOG_EVERY_S)
        self.count = self.initial = initial
        self.counts: dict[str, int] = {}
        self.note = ""
        self.started = _now()
        self._shown = self.started - (self.every_s if self.tty else 0.0)  # a bar draws at once, lines wait
        self._width = 0
        self._closed = False
        self._stop = threading.Event()
        self.channel = channel
        with _lock:
            _open.append(self)
            if channel:
                _channels[channel] = self
        self._ticker = None
        if tick and self.enabled:
            self._ticker = threading.Thread(target=self._tick, name=f"progress {label}", daemon=True)
            self._ticker.start()

    # -- counting ---------------------------------------------------------------------------------------------

    def update(self, n: int = 1, key: str | None = None, note: str | None = None) -> None:
        """Adds `n` (to `key`'s count too, shown by key)."""
        with _lock:
            self.count += n
            if key is not None:
                self.counts[key] = self.counts.get(key, 0) + n
            if note is not None:
                self.note = note
        self.refresh()

    def set(self, count: int | None = None, note: str | None = None, counts: dict[str, int] | None = None) -> None:
        """Sets the count, or the counts by key (the count is their sum)."""
        with _lock:
            if counts is not None:
                self.counts = dict(counts)
                count = sum(counts.values())
            self.count = self.count if count is None else count
            if note is not None:
                self.note = note
        self.refresh()

    @property
    def elapsed(self) -> float:
        return _now() - self.started

    def due(self) -> bool:
        """Whether the next `refresh` shows (callers skip costly notes otherwise)."""
        last = self._shown if self.tty else max(self._shown, _logged)
        return self.enabled and _now() - last >= self.every_s and self._innermost()

    # -- showing ----------------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Redraws the bar or logs a line, if due."""
        if not self.due():
            return
        with _lock:
            if not self.due() or self._closed:
                return
            self._shown = _now()
            if self.tty:
                self._draw()
                return
            line = self.status()
            _mark_logged()
        self.log.info("%s", line)

    def status(self) -> str:
        """The throttled line: `label: 450/1,000 steps (45%) · loss 5.1; 12.0 steps/s, 0:37 elapsed, ETA 0:45`."""
        elapsed = self.elapsed
        if not self.count and not self.total:
            return f"{self.label}: running, {clock(elapsed)} elapsed" + (f" ({self.note})" if self.note else "")
        return (f"{self.label}: {self._counted()}{self._by_key()}{self._noted()}; "
                f"{self._rate(elapsed)}, {clock(elapsed)} elapsed{self._eta(elapsed, ', ETA ')}")

    def summary(self) -> str:
        """The final line: `label: 1,000/1,000 steps in 12.3 s (81.3 steps/s) · loss 5.1`."""
        elapsed = self.elapsed
        if not self.count and not self.total:
            return f"{self.label}: done in {elapsed:.1f} s" + self._noted()
        return f"{self.label}: {self._counted(percent=False)}{self._by_key()} in {elapsed:.1f} s ({self._rate(elapsed)}){self._noted()}"

    def bar(self) -> str:
        """The TTY line: `label [=====>    ] 45% 450/1,000 steps · loss 5.1 · 12.0/s · 0:37<0:45`."""
        elapsed = self.elapsed
        parts = [self.label]
        if self.total:
            done = min(1.0, self.count / self.total)
            filled = int(done * BAR_WIDTH)
            parts.append("[" + "=" * filled + (">" if filled < BAR_WIDTH else "") + " " * (BAR_WIDTH - filled - 1) + "]")
        if self.count or self.total:
            parts.append(self._counted() + self._by_key())
        if self.note:
            parts.append("· " + self.note)
        if self.count:
            parts.append(f"· {_amount((self.count - self.initial) / max(elapsed, 1e-9))}/s")
        parts.append("· " + clock(elapsed) + self._eta(elapsed, "<"))
        return " ".join(parts)

    def _counted(self, percent: bool = True) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if not self.total:
            return f"{self.count:,}{unit}"
        pct = f" ({100 * self.count / self.total:.0f}%)" if percent else ""
        return f"{self.count:,}/{self.total:,}{unit}{pct}"

    def _by_key(self) -> str:
        return " (" + ", ".join(f"{k} {v:,}" for k, v in self.counts.items()) + ")" if self.counts else ""

    def _noted(self) -> str:
        return f"; {self.note}" if self.note else ""

    def _rate(self, elapsed: float) -> str:
        return f"{_amount((self.count - self.initial) / max(elapsed, 1e-9))} {self.unit or 'items'}/s"

    def _eta(self, elapsed: float, prefix: str) -> str:
        done = self.count - self.initial
        if not self.total or done <= 0 or self.count >= self.total:
            return ""
        return prefix + clock(elapsed * (self.total - self.count) / done)

    def _innermost(self) -> bool:
        return bool(_open) and _open[-1] is self

    def _draw(self) -> None:
        global _drawn
        if _drawn is not None and _drawn is not self:  # an outer bar's longer line
            _drawn._erase()
        columns = shutil.get_terminal_size((100, 24)).columns - 1
        text = self.bar()[:columns]
        self.stream.write("\r" + text + " " * max(0, self._width - len(text)))
        self.stream.flush()
        self._width = len(text)
        _drawn = self

    def _erase(self) -> None:
        global _drawn
        if self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
        self._width = 0
        if _drawn is self:
            _drawn = None

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, self.every_s)):
            self.refresh()

    # -- ending -----------------------------------------------------------------------------------------------

    def close(self, line: str | None = None, quiet: bool = False) -> None:
        """Ends the bar: erases it and logs the final line (`line`, default `summary()`).

        `quiet`: no final line (a failure, or a caller that logs its own)."""
        if self._closed:
            return
        self._stop.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join()
        with _lock:
            self._closed = True
            if self in _open:  # with the bars opened inside it that an error left open
                del _open[_open.index(self):]
            if self.channel and _channels.get(self.channel) is self:
                del _channels[self.channel]
            self._erase()
            text = line if line is not None else self.summary()
            if not quiet and self.enabled:
                _mark_logged()
        if not quiet and self.enabled:
            self.log.info("%s", text)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(quiet=exc_type is not None)  # a failure says so itself


def _mark_logged() -> None:
    global _logged
    _logged = _now()


def _is_tty(stream) -> bool:
    """Whether `stream` is a terminal; stderr counts as one when it was one
    before `common.native_stderr.filter_native_stderr` put a pipe in its place."""
    from common.native_stderr import native_stderr_is_tty

    try:
        if native_stderr_is_tty() is not None and stream.fileno() == 2:
            return native_stderr_is_tty()
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty/fileno, or a closed stream
        return False


def epoch_callback(callback_base: type, logger: logging.Logger | None = None, stream=None,
                   every_s: float | None = None):
    """A Keras callback: one `Progress` per epoch over its steps, in place of Keras' own bar.

    Its final line carries the epoch's `loss` and every `val_*` value the
    callbacks before it put in the epoch logs (the validation HR), so pass it
    after them.

    Args:
      callback_base: `keras.callbacks.Callback` (`common/` imports no Keras).
    """

    class EpochProgress(callback_base):
        def __init__(self):
            super().__init__()
            self._supports_tf_logs = True  # the loss is read (a device sync) only when shown
            self.bar = None

        def on_epoch_begin(self, epoch, logs=None):
            self.bar = Progress(f"epoch {epoch + 1}/{self.params.get('epochs')}", self.params.get("steps"), "steps",
                                logger, stream, every_s)
            self.first = True

        def on_train_batch_end(self, batch, logs=None):
            if self.first and batch:  # a resumed epoch starts past its first step
                self.bar.count = self.bar.initial = batch
            self.first = False
            if logs and "loss" in logs and self.bar.due():
                self.bar.note = f"loss {_scalar(logs['loss']):.4f}"
            self.bar.set(batch + 1)

        def on_epoch_end(self, epoch, logs=None):
            shown = {k: _scalar(v) for k, v in (logs or {}).items() if k == "loss" or k.startswith("val_")}
            self.bar.note = ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
            self.bar.close()
            self.bar = None

        def on_train_end(self, logs=None):
            if self.bar is not None:  # stopped inside an epoch
                self.bar.close(quiet=True)

    return EpochProgress()


def _scalar(value) -> float:
    return float(value.numpy() if hasattr(value, "numpy") else value)
