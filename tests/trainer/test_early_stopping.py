"""ResumableEarlyStopping: generations written per epoch, pruned, restored.

The end-to-end restart (a preempted `trainer.task` job) is in
test_preemption.py; this drives the callback directly on a tiny model.
"""

from __future__ import annotations

import os

import numpy as np

from trainer.early_stopping import ResumableEarlyStopping
from trainer.layers._keras import keras


def _model():
    model = keras.Sequential([keras.layers.Dense(1)])
    model.build((None, 2))
    return model


def _mark(model, epoch: int) -> None:
    """Weights that say which epoch they are from."""
    model.set_weights([np.full((2, 1), float(epoch), np.float32), np.zeros(1, np.float32)])


def _stopper(state, resume_epoch=0, keep_epochs=1):
    return ResumableEarlyStopping(state, resume_epoch=resume_epoch, keep_epochs=keep_epochs, monitor="v",
                                  mode="max", patience=3)


def test_generations_are_pruned_and_a_restart_resumes_from_the_last_completed_epoch(tmp_path):
    state = str(tmp_path / "es")
    model, stopper = _model(), _stopper(state)
    stopper.set_model(model)
    stopper.on_train_begin()
    for epoch, value in enumerate([0.1, 0.3, 0.2, 0.25]):
        _mark(model, epoch)
        stopper.on_epoch_end(epoch, {"v": value, "loss": 1.0 - value})
    assert not model.stop_training  # patience 3; epochs 2 and 3 did not improve
    # keep_epochs=1: generations 2 and 3 stay; both name epoch 1 as the best.
    assert sorted(os.listdir(state)) == ["best-0001.npz", "epoch-0002.json", "epoch-0003.json"]

    # The backup completed epoch 2 only: epoch 3 is re-run; its generation is ignored.
    model, restarted = _model(), _stopper(state, resume_epoch=3)
    restarted.set_model(model)
    restarted.on_train_begin()
    assert (restarted.best, restarted.best_epoch, restarted.wait) == (0.3, 1, 1)
    assert [e["v"] for e in restarted.epoch_logs] == [0.1, 0.3, 0.2] and restarted.first_epoch == 0
    assert restarted.best_weights[0][0, 0] == 1.0
    for epoch, value in ((3, 0.29), (4, 0.28)):
        _mark(model, epoch)
        restarted.on_epoch_end(epoch, {"v": value, "loss": 1.0 - value})
    assert model.stop_training and restarted.stopped_epoch == 4  # wait reached 3 at epoch 4
    assert [e["v"] for e in restarted.epoch_logs] == [0.1, 0.3, 0.2, 0.29, 0.28]
    restarted.on_train_end()
    assert model.get_weights()[0][0, 0] == 1.0  # epoch 1's weights put back
    assert not os.path.exists(state)


def test_a_fresh_start_drops_stale_state(tmp_path):
    state = str(tmp_path / "es")
    model, stopper = _model(), _stopper(state)
    stopper.set_model(model)
    stopper.on_train_begin()
    _mark(model, 0)
    stopper.on_epoch_end(0, {"v": 0.5})
    assert os.listdir(state)
    fresh = _stopper(state)
    fresh.set_model(_model())
    fresh.on_train_begin()
    assert not os.path.exists(state) and fresh.best_weights is None and fresh.epoch_logs == []


def test_a_missing_generation_restarts_early_stopping_and_says_so(tmp_path, caplog):
    stopper = _stopper(str(tmp_path / "none"), resume_epoch=2)
    stopper.set_model(_model())
    with caplog.at_level("WARNING", logger="trainer.early_stopping"):
        stopper.on_train_begin()
    assert "no early-stopping state" in caplog.text
    assert stopper.best_weights is None and stopper.first_epoch == 2
