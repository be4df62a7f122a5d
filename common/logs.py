"""One logging setup for every `mer` command.

The project's own progress is INFO on stderr (`common/progress.py`: a bar
on a terminal, a line every 30 s elsewhere, one final line per stage);
Beam's INFO lines, absl and TensorFlow's C++ warnings are hidden unless
`verbose` (`-v`).
"""

from __future__ import annotations

import logging
import os

from common.native_stderr import filter_native_stderr

OURS = ("__main__", "beam", "trainer", "export", "serving", "common", "mer", "benchmarks")


def setup_logging(verbose: bool = False) -> None:
    """Call before TensorFlow is imported to also quiet its C++ logs."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        filter_native_stderr()
    # Third-party libraries (Beam logs to the root logger) stay at WARNING.
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True)
    from common.progress import make_room

    for handler in logging.getLogger().handlers:
        handler.addFilter(make_room)  # a log line never lands in the middle of a progress bar
        if not verbose:
            handler.addFilter(_known_noise)
    for name in OURS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


# Warnings that say nothing to a user of this project (Beam's optional GCP
# client probe, its memory probe on this platform).
NOISE = ("apitools not found", "Resource module is not available")


def _known_noise(record: logging.LogRecord) -> bool:
    return not any(str(record.msg).startswith(n) for n in NOISE)
