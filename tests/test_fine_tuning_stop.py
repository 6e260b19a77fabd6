"""Fine-tuning's early stopping (trainer.train.fine_tuning_stop): not before half the epochs, and the weights
kept are those of the best epoch it watched. Driven by a real Keras callback on a real (tiny) model, with
the validation losses of a run that stopped too early (runs/v403, 2026-12-07)."""

import numpy as np
import pytest

pytest.importorskip("keras", reason="the train extra (tensorflow-cpu) is not installed")

import keras  # noqa: E402

from trainer.train import TrainConfig, fine_tuning_stop  # noqa: E402

# Epoch by epoch: the 2nd is low by chance while the rate is still high, then three worse ones.
NOISY_START = [0.469, 0.306, 0.369, 0.378, 0.324, 0.26, 0.25, 0.23, 0.22, 0.225]


def drive(stop, losses):
    """Run the callback over ``losses`` as fit would, the model's one weight set to the epoch number:
    (epochs run, the weight restored at the end)."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.stop_training = False  # as fit sets it
    stop.set_model(model)
    stop.on_train_begin()
    ran = 0
    for epoch, loss in enumerate(losses):
        model.layers[0].set_weights([np.full((1, 1), float(epoch), np.float32)])
        stop.on_epoch_end(epoch, {"val_loss": loss})
        ran += 1
        if model.stop_training:
            break
    stop.on_train_end()
    return ran, int(round(float(model.layers[0].get_weights()[0][0, 0])))


def test_a_low_second_epoch_does_not_end_fine_tuning_before_half_the_epochs():
    ran, kept = drive(fine_tuning_stop(TrainConfig(fine_epochs=10, patience=3)), NOISY_START)
    assert ran == 10
    assert kept == 8  # the 9th epoch, 0.22: the best of the epochs watched


def test_patience_alone_would_have_stopped_it_at_the_fifth():
    # What the recipe did before: the same losses, watched from the first epoch.
    ran, kept = drive(fine_tuning_stop(TrainConfig(fine_epochs=10, patience=3, early_stop_from=0)), NOISY_START)
    assert (ran, kept) == (5, 1)


def test_once_watching_it_still_stops_on_patience():
    losses = [0.5, 0.4, 0.3, 0.3, 0.3, 0.2, 0.3, 0.3, 0.3, 0.1]
    ran, kept = drive(fine_tuning_stop(TrainConfig(fine_epochs=10, patience=3)), losses)
    assert (ran, kept) == (9, 5)
