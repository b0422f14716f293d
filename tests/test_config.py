"""dibe_jax.train.config, .typed and dibe_jax.configs: typed fields (choices are Literal),
text parsed by each field's annotation, unknown names refused at every level, config files
and the shipped configs."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any, Literal, get_args

import pytest

from dibe_jax import cli, configs, models, train
from dibe_jax.errors import ConfigError, UserError
from dibe_jax.train import checks, typed
from dibe_jax.train import config as config_mod

ROOT = Path(__file__).resolve().parents[1]

CHOICES = {  # every Literal field of the config and its allowed values
    "model.name": config_mod.ModelName,
    "optim.schedule": config_mod.Schedule,
    "data.pipeline": config_mod.Pipeline,
    "dtype": config_mod.Precision,
    "nonfinite": config_mod.NonFinite,
}


def test_the_literal_fields_are_the_config_choices():
    found = {}

    def walk(cls: type, prefix: str) -> None:
        for name, tp in typed.hints(cls).items():
            if hasattr(tp, "__dataclass_fields__"):
                walk(tp, f"{prefix}{name}.")
            elif typed.choices(tp):
                found[f"{prefix}{name}"] = typed.choices(tp)

    walk(train.Config, "")
    assert found == {k: get_args(v) for k, v in CHOICES.items()}
    assert get_args(config_mod.ModelName) == models.names()  # the Literal is the registry
    assert tuple(checks.DTYPES) == get_args(config_mod.Precision)


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_a_choice_outside_the_literal_is_refused_with_the_allowed_values(key):
    allowed = ", ".join(get_args(CHOICES[key]))
    message = f"{key}: expected one of {allowed}, got 'nope'"
    with pytest.raises(ConfigError, match=re.escape(message)):
        train.override(train.Config(), {key: "nope"})
    with pytest.raises(ConfigError, match=re.escape(message)):
        train.apply_overrides(train.Config(), [f"{key}=nope"])
    group, _, last = key.rpartition(".")
    d = {group: {last: "nope"}} if group else {last: "nope"}
    with pytest.raises(ConfigError, match=re.escape(message)):
        train.from_dict(d)
    c = train.Config()  # set as an attribute: caught by the check every run makes
    setattr(getattr(c, group) if group else c, last, "nope")
    with pytest.raises(ConfigError, match=re.escape(message)):
        train.validate(c, in_memory=True)


def test_every_choice_is_accepted_and_quoted_text_too():
    for key, tp in CHOICES.items():
        for value in get_args(tp):
            assert (
                train.config.flatten(train.apply_overrides(train.Config(), [f"{key}={value}"]))[key]
                == value
            )
    c = train.apply_overrides(train.Config(), ["optim.schedule='cosine'", 'model.name="segnet"'])
    assert (c.optim.schedule, c.model.name) == ("cosine", "segnet")


@pytest.mark.parametrize(
    ("item", "key", "value"),
    [
        ("epochs=7", "epochs", 7),
        ("optim.lr=5e-2", "optim.lr", 0.05),
        ("optim.lr=1", "optim.lr", 1.0),
        ("optim.grad_clip=none", "optim.grad_clip", None),
        ("optim.grad_clip=2.5", "optim.grad_clip", 2.5),
        ("optim.step_epochs=10,20", "optim.step_epochs", [10, 20]),
        ("optim.step_epochs=[5]", "optim.step_epochs", [5]),
        ("progress=off", "progress", False),
        ("data.augment=yes", "data.augment", True),
        ("data.image_size=64", "data.image_size", 64),
        ("data.image_size=[64, 128]", "data.image_size", [64, 128]),
        ("data.image_size=[[0,64],[10,96]]", "data.image_size", [[0, 64], [10, 96]]),
        ("data.image_size=null", "data.image_size", None),
        ("checkpoint_every_steps=100", "checkpoint_every_steps", 100),
        ("data.manual_dir=../data/cfd", "data.manual_dir", "../data/cfd"),
        ("model.width=16", "model.width", 16),  # the model's annotation: int
        ("model.align_corners=0", "model.align_corners", False),  # bool
        ("model.upsampling=transposed", "model.upsampling", "transposed"),  # str
        ("loss.gamma=2", "loss.gamma", 2.0),  # the loss's default is a float
        ("loss.alpha=0.7", "loss.alpha", 0.7),
    ],
)
def test_set_text_is_parsed_by_the_annotation(item, key, value):
    flat = train.config.flatten(train.apply_overrides(train.Config(), [item]))
    assert flat[key] == value and type(flat[key]) is type(value)


def test_model_options_take_the_type_of_the_model_they_belong_to():
    c = train.apply_overrides(train.Config(), ["model.name=pspnet", "model.bins=1,2,4"])
    assert c.model.options == {"bins": [1, 2, 4]}  # Sequence[int] in PSPNet's signature
    with pytest.raises(ConfigError, match=r"model.bins: expected a list of integers"):
        train.apply_overrides(c, ["model.bins=[1, two]"])
    with pytest.raises(ConfigError, match="model.width: expected an integer, got '8.5'"):
        train.apply_overrides(train.Config(), ["model.width=8.5"])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("epochs=2.5", "epochs: expected an integer, got '2.5'"),
        ("progress=maybe", "progress: expected true or false, got 'maybe'"),
        ("optim.lr=inf", "optim.lr: expected a number, got 'inf'"),
        ("optim.grad_clip=big", "optim.grad_clip: expected a number or none, got 'big'"),
        ("optim.step_epochs=a,b", "optim.step_epochs: expected a list of integers like"),
        (
            "data.image_size=[64, 128, 3]",
            "data.image_size: expected an integer, [rows, cols] like [64, 128], a schedule "
            "[[epoch, size], ...] like [[0, 64], [10, 96]] or none, got '[64, 128, 3]'",
        ),
    ],
)
def test_bad_text_names_the_field_and_the_type(item, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        train.apply_overrides(train.Config(), [item])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("epoch=1", "unknown config field 'epoch'; config has: model, loss, data, optim, seed"),
        ("optim.lrr=0.1", "unknown config field 'optim.lrr'; optim has: lr, momentum"),
        ("data.pipelines=grain", "unknown config field 'data.pipelines'; data has:"),
        ("optimizer.lr=0.1", "unknown config field 'optimizer'; config has: model"),
        ("optim.lr.x=1", "unknown config field 'optim.lr.x'"),
        ("optim=1", "'optim' is a group of fields"),
    ],
)
def test_unknown_set_keys_at_every_level(item, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        train.apply_overrides(train.Config(), [item])


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"epoch": 1}, "unknown config field 'epoch'; config has: model, loss"),
        ({"optim": {"lrr": 0.1}}, "unknown config field 'optim.lrr'; optim has: lr, momentum"),
        ({"model": {"name": "unet", "width": 8}}, "unknown config field 'model.width'"),
        ({"optim": 0.1}, "optim: expected a mapping, got 0.1"),
        ({"loss": {"params": {1: 0.5}}}, "loss.params: expected a mapping, got {1: 0.5}"),
    ],
)
def test_unknown_dict_keys_at_every_level(d, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        train.from_dict(d)


def test_attributes_that_are_not_fields_are_refused_at_every_level():
    for obj_path, attr, key in [
        ("", "epoch", "epoch"),
        ("optim", "learning_rate", "optim.learning_rate"),
        ("data", "imagesize", "data.imagesize"),
        ("model", "width", "model.width"),  # an option belongs in model.options
    ]:
        c = train.Config()
        setattr(c if not obj_path else getattr(c, obj_path), attr, 1)
        with pytest.raises(ConfigError, match=re.escape(f"unknown config field {key!r}")):
            train.check_types(c)
        with pytest.raises(ConfigError, match=re.escape(f"unknown config field {key!r}")):
            train.validate(c, in_memory=True)
    c = train.Config()
    c.optim = {"lr": 0.1}  # a group replaced by a dict
    with pytest.raises(ConfigError, match="optim: expected a OptimConfig"):
        train.check_types(c)


def _write(path: Path, body: str) -> Path:
    path.write_text("from dibe_jax import train\n\n\ndef get_config():\n" + body)
    return path


def test_a_config_file_typo_is_refused_in_one_line(tmp_path, capsys):
    typo = _write(tmp_path / "typo.py", "    c = train.Config()\n    c.epoch = 1\n    return c\n")
    with pytest.raises(ConfigError) as e:
        train.load(typo)
    assert str(e.value) == (
        f"--config {typo}: unknown config field 'epoch'; config has: model, loss, data, optim, "
        "seed, epochs, batch_size, eval_every, dtype, nonfinite, keep_checkpoints, "
        "checkpoint_every_epochs, checkpoint_every_steps, progress"
    )
    nested = _write(
        tmp_path / "n.py", "    c = train.Config()\n    c.optim.mom = 0\n    return c\n"
    )
    with pytest.raises(ConfigError, match=r"n.py: unknown config field 'optim.mom'; optim has"):
        train.load(nested)
    workdir = tmp_path / "run"
    rc = cli.main(["train", "--config", str(typo), "--workdir", str(workdir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown config field 'epoch'" in err[0], err
    assert not workdir.exists()


def test_config_files_of_every_form(tmp_path):
    good = _write(
        tmp_path / "good.py",
        "    c = train.Config()\n    c.loss.name = 'dibe_reg'\n"
        "    c.model.options['width'] = 8\n    return c\n",
    )
    c = train.load(good)
    assert (c.loss.name, c.model.options) == ("dibe_reg", {"width": 8})
    (tmp_path / "config.json").write_text(c.to_json())
    assert train.load(tmp_path / "config.json") == c
    as_dict = _write(tmp_path / "d.py", "    return {'epochs': 3, 'optim': {'lr': 0.1}}\n")
    assert (train.load(as_dict).epochs, train.load(as_dict).optim.lr) == (3, 0.1)

    class ConfigDictLike:  # what an ml_collections.ConfigDict offers
        def to_dict(self) -> dict[str, Any]:
            return {"epochs": 4, "epoch": 5}

    with pytest.raises(ConfigError, match="x.py: unknown config field 'epoch'"):
        train.config.from_get_config(ConfigDictLike(), where="x.py")
    cases = [
        ("bad_type.py", "    return {'epochs': 'two'}\n", "epochs: expected an integer"),
        ("none.py", "    return None\n", "get_config() returned NoneType"),
        ("raises.py", "    return train.Config().nope\n", "get_config() raised AttributeError"),
    ]
    for name, body, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            train.load(_write(tmp_path / name, body))
    (tmp_path / "no_fn.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="defines no get_config"):
        train.load(tmp_path / "no_fn.py")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        train.load(tmp_path / "broken.json")
    with pytest.raises(ConfigError, match="no such file"):
        train.load(tmp_path / "missing.py")


def test_user_errors_derive_from_one_base():
    assert issubclass(ConfigError, UserError) and train.ConfigError is ConfigError


# ------------------------------------------------------------------------ shipped configs


def test_every_shipped_config_names_what_it_reproduces_and_the_command():
    names = configs.names()
    assert {"demo", "cfd_unet_dibe", "cfd_unet_dibe_reg", "cfd_unet_ft"} <= set(names)
    assert {"mt_crack_unet_dibe", "thc448_segnet_dibe_dis_search"} <= set(names)
    for name in names:
        doc = configs._module(name).get_config.__doc__
        assert configs.describe(name) == doc.strip().splitlines()[0]
        assert f"--config {name}" in doc and "Expected" in doc, name


def _cli_config(*argv: str) -> train.Config:
    """The config ``dibe-jax ARGV`` would train, as the CLI builds it (nothing runs)."""
    args = cli.build_parser().parse_args(cli._config_dot_flags(list(argv)))
    return cli._config_from_args(args)


@pytest.mark.parametrize("name", configs.names())
def test_train_config_name_validates(name, compilations):
    config = _cli_config("train", "--config", name, "--workdir", "unused")
    assert config == configs.get(name)
    train.validate(config)  # names, classes, loss ranges, sizes: no data needed
    assert compilations == []


def test_shipped_config_values_and_dot_overrides():
    c = _cli_config(
        "train", "--config", "cfd_unet_dibe", "--config.loss.alpha=0.7", "--workdir", "w"
    )
    assert (c.data.dataset, c.model.name, c.model.options, c.loss.name) == (
        "crackforest",
        "unet",
        {"width": 64},
        "dibe",
    )
    assert (c.epochs, c.batch_size, c.eval_every, c.optim.lr, c.optim.momentum) == (
        50,
        32,
        5,
        0.01,
        0.9,
    )
    assert c.loss.params == {"alpha": 0.7}
    assert configs.get("cfd_unet_dibe") is not configs.get("cfd_unet_dibe")  # fresh each time
    assert configs.get("cfd_unet_ft").loss.name == "focal_tversky"
    assert configs.get("cfd_unet_dibe_reg").loss.name == "dibe_reg"
    with pytest.raises(
        ConfigError, match="--config cfd_unet_dbe: no shipped config.*cfd_unet_dibe"
    ):
        configs.load("cfd_unet_dbe")


def test_demo_config_is_the_makefile_demo():
    recipe = (ROOT / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    command = recipe.split("dibe-jax ", 1)[1].replace("\\\n", " ")
    argv = [a for a in shlex.split(command) if a != "--overwrite"]
    made = _cli_config(*argv)
    made.data.data_dir = None  # where TFDS keeps the generated set, not a setting
    assert made == configs.get("demo")


def test_configs_command_lists_names_and_first_lines(capsys):
    assert cli.main(["configs"]) == 0
    out = capsys.readouterr().out
    for name in configs.names():
        assert re.search(rf"^{name} +{re.escape(configs.describe(name))}$", out, re.M), name


def test_typed_helpers_on_their_own():
    tp = Literal["a", "b"] | None
    assert typed.matches(None, tp) and typed.matches("a", tp) and not typed.matches("c", tp)
    assert not typed.matches(1.5, int) and not typed.matches(float("nan"), float)
    assert typed.matches((64, 128), tuple[int, int]) and not typed.matches([64], tuple[int, int])
    assert typed.parse("'b'", tp, name="x") == "b" and typed.parse("null", tp, name="x") is None
    assert json.loads(json.dumps(typed.parse("[[0, 32]]", config_mod.ImageSize, name="s"))) == [
        [0, 32]
    ]
    with pytest.raises(TypeError, match="unsupported type annotation"):
        typed.matches(1, set[int])
