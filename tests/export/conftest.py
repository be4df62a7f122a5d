"""Trained tiny models (DCM and CR) on the shared world and their export,
once per test session: the export tests and the embed/index tests read them
(read-only by convention)."""

import pytest


@pytest.fixture(scope="session")
def trained(world, tmp_path_factory):
    """`{"dcm": model_dir, "cr": model_dir}`: a few steps each (weights
    only need to be non-trivial, not good)."""
    from trainer import runtime
    from trainer.config import load_config
    from trainer.task import train

    base = tmp_path_factory.mktemp("trained")
    dirs = {}
    for kind in ("dcm", "cr"):
        cfg = load_config("synthetic-small", [f"model.kind={kind}", "train.epochs=1", "train.steps_per_epoch=8",
                                              "train.batch_size=64"])
        dirs[kind] = str(base / kind)
        train(cfg, world, runtime.resolve(model_dir=dirs[kind], env={}), verbose=0)
    return dirs


@pytest.fixture(scope="session")
def exported(trained, tmp_path_factory):
    """The export base of both models (version 1)."""
    from export.exporter import export_models

    base = str(tmp_path_factory.mktemp("export") / "serving")
    export_models([trained["dcm"], trained["cr"]], base)
    return base
