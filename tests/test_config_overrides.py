"""Typed config values (dibe_jax.train.config): ``--set`` text parsed by the field's type,
Python values type-checked, config files (``.py`` with ``get_config()``, ``.json``)."""

from __future__ import annotations

import json

import pytest

from dibe_jax import train


def test_text_is_parsed_by_the_field_type():
    c = train.apply_overrides(
        train.Config(),
        [
            "loss.name=tversky",
            "loss.alpha=0.7",
            "model.width=16",
            "optim.lr=5e-2",
            "data.image_size=[[0, 64], [10, 96]]",
            "optim.grad_clip=none",
            "epochs=3",
            "progress=false",
            "optim.step_epochs=10,20",
            "model.align_corners=False",
        ],
    )
    assert (c.loss.name, c.loss.params, c.model.options["width"]) == ("tversky", {"alpha": 0.7}, 16)
    assert c.optim.lr == 0.05 and c.epochs == 3 and c.progress is False
    assert c.data.image_size == [[0, 64], [10, 96]] and c.optim.step_epochs == [10, 20]
    assert c.model.options["align_corners"] is False and c.optim.grad_clip is None
    assert train.from_dict(json.loads(c.to_json())) == c


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("epochs=two", "epochs: expected an integer, got 'two'"),
        ("optim.lr=abc", "optim.lr: expected a number, got 'abc'"),
        ("progress=maybe", "progress: expected true or false"),
        ("data.image_size=big", "data.image_size: expected an integer"),
        ("loss.alpha=high", "loss.alpha: expected a number"),
        ("model.width=wide", "model.width: expected an integer"),
        ("optim.nope=1", "unknown config field 'optim.nope'"),
        ("epochs", "expected KEY=VALUE"),
        ("optim=1", "'optim' is a group of fields"),
    ],
)
def test_bad_text_names_the_field(item, message):
    with pytest.raises(train.ConfigError, match=message.replace("(", r"\(")):
        train.apply_overrides(train.Config(), [item])


def test_python_values_are_type_checked():
    with pytest.raises(train.ConfigError, match="epochs: expected an integer, got 2.5"):
        train.override(train.Config(), {"epochs": 2.5})
    with pytest.raises(train.ConfigError, match="batch_size: expected an integer, got True"):
        train.override(train.Config(), {"batch_size": True})
    with pytest.raises(train.ConfigError, match="unknown config field"):
        train.from_dict({"epochz": 3})
    with pytest.raises(train.ConfigError, match="optim.lr: expected a number"):
        train.from_dict({"optim": {"lr": "fast"}})


def test_config_files_py_and_json(tmp_path):
    py = tmp_path / "cfg.py"
    py.write_text(
        "from dibe_jax import train\n\n"
        "def get_config():\n"
        "    c = train.Config()\n"
        "    c.loss.name = 'dibe_reg'\n"
        "    c.model.options['width'] = 8\n"
        "    return c\n"
    )
    c = train.load(py)
    assert c.loss.name == "dibe_reg" and c.model.options == {"width": 8}
    js = tmp_path / "config.json"
    js.write_text(c.to_json())
    assert train.load(js) == c
    (tmp_path / "bad.py").write_text("def get_config():\n    return {'epochs': 'two'}\n")
    with pytest.raises(train.ConfigError, match="epochs: expected an integer"):
        train.load(tmp_path / "bad.py")
    with pytest.raises(train.ConfigError, match="no such file"):
        train.load(tmp_path / "missing.py")
