"""``train.validate`` (dibe_jax.train.checks): every value of a config is checked before
anything compiles, with one message naming the field."""

from __future__ import annotations

import pytest

from dibe_jax import train


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"loss.gamma": -1.0}, r"loss.params of 'dibe': `gamma` must be > 0"),
        ({"loss.theta": 2.0}, r"`theta` must be in \[0, 1\]"),
        ({"loss.name": "dice_multiclass"}, "multi-class loss"),
        ({"loss.name": "dicee"}, "loss.name: unknown loss 'dicee'"),
        ({"loss.gamma_ft": 0.5}, "takes no hyperparameter 'gamma_ft'"),
        ({"model.name": "unett"}, "model.name: expected one of unet"),
        ({"model.widht": 8}, "model.widht: model 'unet' takes no option 'widht'"),
        ({"data.image_size": 100}, "multiples of 16"),
        ({"data.image_size": [[0, 64], [5, 90]]}, "multiples of 16"),
        ({"data.image_size": [[3, 64]]}, "start at epoch 0"),
        ({"batch_size": 0}, "batch_size"),
        ({"nonfinite": "ignore"}, "nonfinite: expected one of raise, skip"),
        ({"optim.lr": 0.0}, "optim.lr: expected a value > 0"),
        ({"optim.momentum": 1.0}, r"optim.momentum: expected a value in \[0, 1\)"),
        ({"data.brightness": 1.5}, r"data.brightness: expected a value in \[0, 1\]"),
        ({"epochs": 0}, "epochs: expected a value >= 1"),
    ],
)
def test_validate_catches_values_before_compiling(values, message, compilations):
    with pytest.raises(train.ConfigError, match=message):  # a choice already in override()
        train.validate(train.override(train.Config(), values), in_memory=True)
    assert compilations == []  # an abstract trace at most, never a compilation


def test_the_compilations_fixture_sees_a_compilation(compilations):
    """The guard of the tests above can fail: a new jitted program is seen."""
    import jax
    import jax.numpy as jnp

    jax.jit(lambda x: x * 3.25 + 1.0)(jnp.arange(7.0)).block_until_ready()
    assert compilations


def test_batch_not_divisible_by_devices(monkeypatch):
    import jax

    monkeypatch.setattr(jax, "device_count", lambda: 4)
    with pytest.raises(train.ConfigError, match="multiple of the 4 devices"):
        train.validate(train.override(train.Config(), {"batch_size": 6}), in_memory=True)
