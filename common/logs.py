"""One logging setup for every `mer` command.

The project's own progress is INFO on stderr; Beam's INFO lines, absl and
TensorFlow's C++ warnings are hidden unless `verbose` (`-v`).
"""

from __future__ import annotations

import logging
import os

THIRD_PARTY = ("apache_beam", "tensorflow", "absl", "h5py", "grpc", "urllib3")


def setup_logging(verbose: bool = False) -> None:
    """Call before TensorFlow is imported to also quiet its C++ logs."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
