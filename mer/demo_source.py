"""What `mer demo` runs on: a config (preset or YAML/JSON) and its raw files.

`--raw_dir` means what `mer prepare --raw_dir` means for the synthetic
source (already generated files, from `mer synthesize`), and for the
MovieLens formats it replaces the preset's `data.source.path` (the presets
point at `../shared/data/...`, relative to the working directory, so a user
who downloaded the files elsewhere passes the directory instead). Every
required raw file is checked before the run directory is cleared, so a wrong
directory is one line naming the missing file, not a Beam traceback minutes
in.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os

# The files each GroupLens layout must hold, as GroupLens ships them (beam/movielens.py reads them).
MOVIELENS_FILES = {"ml-latest-small": ("ratings.csv", "movies.csv"), "ml-100k": ("u.data", "u.item")}
# What `mer synthesize` writes (follows are optional for the reader, but the generator always writes them).
SYNTHETIC_PATTERNS = ("events-*.csv", "items-*.csv", "follows-*.csv")


@dataclasses.dataclass(frozen=True)
class DemoSource:
    """The resolved data source of one demo run.

    Attributes:
      config: the preset name or YAML/JSON path, as given.
      overrides: `key=value` overrides every stage applies on top of it
        (the raw directory, for MovieLens).
      raw_dir: for the synthetic source, the generated files to reuse
        (None: the demo generates them under the run directory).
      format: `data.source.format` of the config.
      path: the raw directory actually read (None for a generated world).
    """

    config: str
    overrides: tuple[str, ...]
    raw_dir: str | None
    format: str
    path: str | None

    def load(self, extra: list[str] | None = None):
        """The resolved `MerConfig` with this source's overrides, then `extra`."""
        from trainer.config import load_config

        return load_config(self.config, list(self.overrides) + list(extra or []))


def _inside(path: str, directory: str) -> bool:
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def resolve_source(config: str, raw_dir: str | None, run_dir: str) -> DemoSource:
    """Resolves `--config` / `--raw_dir` and checks every raw file is there.

    Args:
      config: a preset name (`synthetic-small`, `movielens-small`, `ml-100k`)
        or a YAML/JSON path.
      raw_dir: the directory holding the raw files, or None (MovieLens: the
        config's `data.source.path`; synthetic: generate the world).
      run_dir: the demo's run directory, which is cleared before the run.

    Returns:
      The `DemoSource`.

    Raises:
      FileNotFoundError: no such config, no such raw directory, or a required
        raw file missing (the message names the file).
      ValueError: a bad config, `--raw_dir` with the generic source (its files
        are named in the config), or a raw directory inside `run_dir`.
    """
    from trainer.config import load_config

    fmt = load_config(config).data.source.format
    if raw_dir is not None and fmt == "generic":
        raise ValueError(f"--raw_dir {raw_dir}: config {config!r} uses the generic source, whose files are "
                         "named by data.source.events / items / follows in the config; drop --raw_dir")
    if raw_dir is not None and _inside(raw_dir, run_dir):
        raise ValueError(f"--raw_dir {raw_dir}: inside --run_dir {run_dir}, which the demo clears first; "
                         "choose a raw directory outside it")
    overrides: tuple[str, ...] = ()
    if fmt in MOVIELENS_FILES and raw_dir is not None:
        # JSON-quoted, so the YAML override parser keeps any path a string.
        overrides = (f"data.source.path={json.dumps(os.path.abspath(raw_dir))}",)
    cfg = load_config(config, list(overrides))
    if fmt in MOVIELENS_FILES:
        root = cfg.data.source.path
        where = f"--raw_dir {raw_dir}" if raw_dir is not None else f"data.source.path {root} (config {config!r})"
        hint = f"; pass --raw_dir DIR, the unzipped GroupLens {fmt} directory" if raw_dir is None else ""
        if not root or not os.path.isdir(root):
            raise FileNotFoundError(f"{where}: no such directory (expected GroupLens {fmt}: "
                                    f"{', '.join(MOVIELENS_FILES[fmt])}){hint}")
        for name in MOVIELENS_FILES[fmt]:
            if not os.path.isfile(os.path.join(root, name)):
                raise FileNotFoundError(f"{where}: {name} not found in {root} (GroupLens {fmt} needs "
                                        f"{', '.join(MOVIELENS_FILES[fmt])}){hint}")
        return DemoSource(config, overrides, None, fmt, root)
    if fmt == "synthetic" and raw_dir is not None:
        if not os.path.isdir(raw_dir):
            raise FileNotFoundError(f"--raw_dir {raw_dir}: no such directory (the synthetic source reuses the "
                                    "files of `mer synthesize --output_dir DIR`)")
        for pattern in SYNTHETIC_PATTERNS:
            if not glob.glob(os.path.join(raw_dir, pattern)):
                raise FileNotFoundError(f"--raw_dir {raw_dir}: no {pattern} (the synthetic source reuses the "
                                        "files of `mer synthesize --output_dir DIR`)")
        return DemoSource(config, overrides, raw_dir, fmt, raw_dir)
    return DemoSource(config, overrides, None, fmt, None)
