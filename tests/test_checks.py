"""dibe_jax.train.checks: every check of a config before anything is opened or compiled,
each failure one line naming the field; mask values; what a resume may change."""

from __future__ import annotations

import re

import numpy as np
import pytest

from dibe_jax import train
from dibe_jax.errors import ConfigError
from dibe_jax.train import checks

MULTI = ("background", "crack", "spot")


def _config(**values) -> train.Config:
    return train.override(train.Config(), {k.replace("__", "."): v for k, v in values.items()})


def _refused(config: train.Config, message: str, **kwargs) -> None:
    with pytest.raises(ConfigError) as e:
        checks.validate(config, **{"in_memory": True, **kwargs})
    text = str(e.value)
    assert "\n" not in text and re.search(message, text), text


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 0}, r"^epochs: expected a value >= 1, got 0$"),
        ({"eval_every": 0}, r"^eval_every: expected a value >= 1"),
        ({"keep_checkpoints": 0}, r"^keep_checkpoints: expected a value >= 1"),
        ({"checkpoint_every_steps": 0}, r"^checkpoint_every_steps: expected a value >= 1"),
        ({"data.worker_count": -1}, r"^data.worker_count: expected a value >= 0"),
        ({"data.memory_budget_mb": -5}, r"^data.memory_budget_mb: expected a value >= 0"),
        ({"optim.lr": 0.0}, r"^optim.lr: expected a value > 0, got 0.0"),
        ({"optim.grad_clip": 0.0}, r"^optim.grad_clip: expected a value > 0"),
        ({"optim.momentum": 1.0}, r"^optim.momentum: expected a value in \[0, 1\), got 1.0"),
        ({"optim.step_epochs": [10, -1]}, r"^optim.step_epochs: expected epochs >= 0"),
        ({"data.hflip": 1.5}, r"^data.hflip: expected a value in \[0, 1\], got 1.5"),
        ({"data.saturation": -0.1}, r"^data.saturation: expected a value in \[0, 1\]"),
        ({"data.image_size": []}, r"^data.image_size: expected a size, \[rows, cols\] or a"),
        ({"data.image_size": [[0, 32], [5, 0]]}, r"^data.image_size: expected positive sizes"),
        ({"data.image_size": [[2, 32]]}, r"^data.image_size: a schedule must be sorted"),
        ({"data.image_size": [[0, 64], [10, 32], [5, 48]]}, r"a schedule must be sorted"),
        ({"data.image_size": [64, 100]}, r"^data.image_size: unet needs sizes that are multip"),
        ({"batch_size": 3}, r"^batch_size: expected a positive multiple of the 2 devices"),
        ({"batch_size": -2}, r"^batch_size: expected a positive multiple"),
    ],
)
def test_values_out_of_range_are_refused(values, message, compilations):
    _refused(train.override(train.Config(), values), message)
    assert compilations == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"loss.name": "dibee"}, r"^loss.name: unknown loss 'dibee'; known losses: .*dibe_reg"),
        ({"loss.gamma": -1.0}, r"^loss.params of 'dibe': `gamma` must be > 0"),
        ({"loss.gama": 2.0}, r"^loss.gama: loss 'dibe' takes no hyperparameter 'gama'; it takes"),
        ({"loss.name": "dice_multiclass"}, r"^loss.name: 'dice_multiclass' is a multi-class"),
        ({"model.widht": 8}, r"^model.widht: model 'unet' takes no option 'widht'; it takes:"),
        ({"model.upsampling": "cubic"}, r"^model.options of 'unet': "),
        ({"model.num_stages": 3, "data.image_size": 36}, r"unet needs sizes .* multiples of 8"),
        (
            {"loss.name": "cross_dropout_focal", "loss.mc_samples": 1},
            r"^loss.mc_samples: 'cross_dropout_focal' needs T >= 2",
        ),
    ],
)
def test_names_and_hyperparameters_are_checked_by_their_owner(values, message, compilations):
    classes = MULTI if "dropout" in str(values) else None
    _refused(train.override(train.Config(), values), message, class_names=classes)
    assert compilations == []


def test_a_loss_of_the_wrong_kind_names_the_dataset_and_its_classes():
    _refused(
        _config(loss__name="focal_tversky"),
        r"^loss.name: 'focal_tversky' is a binary loss .*'in-memory data' has 3 classes "
        r"\(background, crack, spot\), a multi-class task",
        class_names=MULTI,
    )
    _refused(
        _config(loss__name="cross_dropout_focal"),
        r"^model.dropout_rate: 'cross_dropout_focal' draws its T = 5 passes from the model's "
        r"dropout, but model 'unet' has dropout_rate 0.0",
        class_names=MULTI,
    )
    checks.validate(
        _config(loss__name="cross_dropout_focal", model__dropout_rate=0.1),
        in_memory=True,
        class_names=MULTI,
    )


def test_datasets_are_checked_by_name_without_building(compilations):
    unknown = r"^data.dataset: unknown dataset 'cityscapes'"
    _refused(_config(data__dataset="cityscapes"), unknown, in_memory=False)
    label3 = r"^data.dataset: .*unknown config 'label3'"
    _refused(_config(data__dataset="crackforest/label3"), label3, in_memory=False)
    # magnetic_tile's images differ in size: its stated default (224) must suit the network
    _refused(
        _config(data__dataset="magnetic_tile/crack", model__num_stages=6),
        r"^data.image_size: unet needs sizes that are multiples of 64 .* got 224x224",
        in_memory=False,
    )
    checks.validate(_config(data__dataset="magnetic_tile/crack"))
    assert compilations == []


def test_in_memory_class_names():
    assert checks.dataset_classes(train.Config(), in_memory=True) == checks.BINARY_CLASSES
    with pytest.raises(ConfigError, match=r"^class_names: expected at least 2 names"):
        checks.dataset_classes(train.Config(), in_memory=True, class_names=["only"])
    assert checks.model_outputs(MULTI) == 3 and checks.model_outputs(("bg", "crack")) == 1


def test_mask_values_outside_the_classes():
    checks.check_mask_values(np.array([[0, 2]]), MULTI, dataset="d", where="train example 0")
    checks.check_mask_values(np.zeros((0,), np.uint8), MULTI, dataset="d", where="w")
    with pytest.raises(ConfigError) as e:
        checks.check_mask_values(np.array([[0, 255]]), MULTI, dataset="d", where="train example 3")
    assert str(e.value) == (
        "data: train example 3 of d has mask values in [0, 255], outside the class ids [0, 3) "
        "of its 3 classes (background, crack, spot)"
    )


def test_resume_takes_only_what_it_can_honour():
    stored = _config(model__width=4)
    more = _config(
        model__width=4, epochs=80, eval_every=2, progress=False, data__data_dir="/elsewhere"
    )
    checks.check_resume(stored, more)
    with pytest.raises(ConfigError, match=r"^--resume: model.width is 4 in r/config.json but 8"):
        checks.check_resume(stored, _config(model__width=8), where="r/config.json")
    with pytest.raises(ConfigError, match=r"^--resume: optim.lr is 0.01 .* but 0.1"):
        checks.check_resume(stored, _config(model__width=4, optim__lr=0.1))
    cosine = _config(optim__schedule="cosine")
    with pytest.raises(ConfigError, match=r"epochs 50 -> 60 would change the cosine"):
        checks.check_resume(cosine, _config(optim__schedule="cosine", epochs=60))
    assert set(checks.RESUMABLE) >= {"epochs", "eval_every", "progress"}


def test_a_valid_config_passes_quietly(compilations):
    checks.validate(train.Config(), in_memory=True)
    checks.validate(_config(data__image_size=[[0, 32], [3, 64]], batch_size=4), in_memory=True)
    assert compilations == []
