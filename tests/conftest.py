"""Shared fixtures: a fixed NumPy seed for every test; the prepared
`synthetic-small` world; tiny trained DCM and CR models on it, their export,
item embeddings and indexes. Each is built once per test run, by whichever
pytest-xdist worker needs it first (the others wait for it and reuse it),
and is read-only by convention: tests copy what they change."""

import fcntl
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import trainer  # noqa: F401  (legacy-Keras switch before TensorFlow loads)
from common import native_stderr

# Commands run in-process here (cli.main) must not move fd 2 under pytest's
# own capture; commands run as processes keep the native-stderr filter.
native_stderr.ENABLED = False


# The longest test files (CI durations, 2 cores), started first so that with
# `pytest -n 2 --dist loadfile` (make test) no worker is left finishing one
# of them alone at the end.
LONGEST_FIRST = ("test_collapse.py", "test_demo.py", "test_demo_movielens.py", "test_resume_exact.py",
                 "test_preemption.py", "test_export_benchmark.py", "test_serving_benchmark.py", "test_retrieval.py",
                 "test_task.py", "test_distributed.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(1234)
    yield


def _built_once(tmp_path_factory, name: str, build) -> Path:
    """`<run tmp>/name`, made by `build(path)` once per test run: under
    pytest-xdist the workers share the run's temporary root, and a lock file
    makes the first worker build while the others wait (a build that failed
    leaves no done mark and is redone by the next worker that asks)."""
    root, run = tmp_path_factory.getbasetemp(), ""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root, run = root.parent, os.environ.get("PYTEST_XDIST_TESTRUNUID", "")[:12]
    path, done = root / f"shared-{name}{run}", root / f"shared-{name}{run}.done"
    with open(root / f"shared-{name}{run}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            if path.exists():
                shutil.rmtree(path)  # a build that failed part way
            path.mkdir()
            build(path)
            done.touch()
    return path


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The `synthetic-small` world prepared by the Beam pipeline (DirectRunner),
    shared by every test that trains or reads it: tests must treat it as
    read-only (write models, copies and logs under their own `tmp_path`)."""
    from mer_testing import prepare_small_world

    path = _built_once(tmp_path_factory, "small_world", lambda path: prepare_small_world(str(path)))
    return str(path)


@pytest.fixture(scope="session")
def trained(world, tmp_path_factory):
    """`{"dcm": model_dir, "cr": model_dir}`: a few steps each (weights
    only need to be non-trivial, not good)."""
    base = _built_once(tmp_path_factory, "trained", lambda base: _train(world, base))
    return {kind: str(base / kind) for kind in ("dcm", "cr")}


def _train(world: str, base: Path) -> None:
    from trainer import runtime
    from trainer.config import load_config
    from trainer.task import train

    for kind in ("dcm", "cr"):
        # CR without the sequence field: after 8 steps its embeddings are
        # then still aligned with their condition topic, so the retrieval
        # tests see every explicit search path (ANN + post-filter included).
        extra = ["model.sequence_layers=0"] if kind == "cr" else []
        cfg = load_config("synthetic-small", [f"model.kind={kind}", "train.epochs=1", "train.steps_per_epoch=8",
                                              "train.batch_size=64"] + extra)
        train(cfg, world, runtime.resolve(model_dir=str(base / kind), env={}), verbose=0)


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory):
    """The export base of both models (version 1)."""
    from export.exporter import export_models

    return str(_built_once(tmp_path_factory, "export",
                           lambda base: export_models([trained["dcm"], trained["cr"]], str(base / "serving")))
               / "serving")


@pytest.fixture(scope="session")
def indexed(exported, tmp_path_factory):
    """A copy of `exported` with item embeddings (`mer embed-items`, Beam
    DirectRunner) and exact ScaNN indexes (`mer build-index`) for both
    retrievers."""
    return str(_built_once(tmp_path_factory, "indexed", lambda base: _index(exported, str(base / "serving")))
               / "serving")


def _index(exported: str, base: str) -> None:
    from beam.embed_items import run_embed_items
    from beam.run import IN_MEMORY
    from export.build_index import run_build_index
    from export.exporter import write_serving_files

    shutil.copytree(exported, base)
    write_serving_files(base)  # models.config names absolute paths: point it at the copy
    for retriever in ("implicit", "explicit"):
        run_embed_items(base, retriever, beam_args=list(IN_MEMORY))
        run_build_index(base, retriever)
