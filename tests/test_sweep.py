"""``dibe-jax sweep``: K runs in one program; a member equals its separate run, reopens with
``eval``, and a field that changes the program is refused in one line."""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dibe_jax import cli, train
from dibe_jax.data import in_memory
from dibe_jax.train import stacked, sweep

sys.path.insert(0, str(Path(__file__).parent))
from _train_script import make_examples, tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def sources():
    return {"train": make_examples(16, 0), "validation": make_examples(8, 1)}


def _config(**overrides):
    values = {"epochs": 2, "batch_size": 4, "loss.name": "dibe", "data.augment": True}
    return tiny_config(**{**values, **overrides})


@pytest.fixture(scope="module")
def swept(tmp_path_factory, sources):
    workdir = tmp_path_factory.mktemp("sweep")
    result = sweep.train_sweep(
        _config(), workdir, {"loss.alpha": [0.3, 0.6]}, [0, 1], sources=sources
    )
    return workdir, result


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_a_member_equals_its_separate_run(swept, sources, tmp_path):
    """Member (alpha 0.6, seed 1) against ``train_and_evaluate`` of the same config: its own
    initialisation, data order and augmentation, so the same run up to rounding."""
    workdir, result = swept
    names = [m.name for m in result.members]
    assert names == ["alpha=0.3/seed0", "alpha=0.3/seed1", "alpha=0.6/seed0", "alpha=0.6/seed1"]
    member = result.members[3]
    assert member.config.loss.params["alpha"] == 0.6 and member.config.seed == 1
    alone = train.train_and_evaluate(member.config, tmp_path / "alone", sources=sources)
    records = result.records[3]
    assert [r["epoch"] for r in records] == [1, 2]
    separate = [json.loads(x) for x in (tmp_path / "alone" / "metrics.jsonl").open()]
    assert records[0]["train_loss"] == pytest.approx(separate[0]["train_loss"], rel=1e-3)
    assert abs(records[-1]["iou"] - alone["iou"]) <= 0.02
    # The other members really differ (their own seed and alpha).
    assert len({round(r[0]["train_loss"], 6) for r in result.records}) == 4


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_learning_rates_sweep_as_members_of_one_program(sources, tmp_path):
    """The learning rate lives in the optimiser state: a sweep over it is one program, and a
    member equals its separate run."""
    result = sweep.train_sweep(
        _config(epochs=1), tmp_path / "lr", {"optim.lr": [0.01, 0.1]}, [0], sources=sources
    )
    assert [m.name for m in result.members] == ["lr=0.01/seed0", "lr=0.1/seed0"]
    member = result.members[1]
    assert member.config.optim.lr == 0.1
    train.train_and_evaluate(member.config, tmp_path / "alone", sources=sources)
    separate = [json.loads(x) for x in (tmp_path / "alone" / "metrics.jsonl").open()]
    got = result.records[1][0]["train_loss"]
    assert got == pytest.approx(separate[0]["train_loss"], rel=1e-3)
    assert got != pytest.approx(result.records[0][0]["train_loss"], rel=1e-3)


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_members_are_run_folders_and_sweep_json_summarises(swept, sources):
    workdir, result = swept
    run = workdir / "alpha=0.3" / "seed1"
    for name in ("config.json", "model.json", "metrics.jsonl", "checkpoints", "plots"):
        assert (run / name).exists(), name
    stored = train.load_config(run)
    assert stored.seed == 1 and stored.loss.params["alpha"] == 0.3
    again = train.evaluate_checkpoint(run, best=False, sources=sources)
    assert again["epoch"] == 2 and again["iou"] == pytest.approx(result.records[1][-1]["iou"])
    summary = json.loads((workdir / "sweep.json").read_text())
    assert summary["settings"]["alpha=0.3"]["seeds"] == [0, 1]
    mean, _, n = summary["settings"]["alpha=0.6"]["iou_last3"]
    assert n == 4 and mean == pytest.approx(
        sum(r["iou"] for recs in result.records[2:] for r in recs) / 4
    )


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_a_rerun_refuses_a_finished_sweep_without_resume_or_overwrite(swept, sources):
    workdir, result = swept
    with pytest.raises(train.ConfigError, match="already holds a run"):
        sweep.train_members(result.members, workdir, sources=sources)


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_a_resumed_sweep_extends_its_members_in_smaller_chunks(
    swept, sources, tmp_path, monkeypatch
):
    """``--resume`` with more epochs continues every member from its last epoch end, keeping
    its records; members that do not fit the device memory together (here: any chunk of more
    than one, refused by the first step) are trained in halved chunks, and the log says so."""
    workdir, result = swept
    copy = tmp_path / "sweep"
    shutil.copytree(workdir, copy)
    real = stacked.stacked_steps

    def tight_memory(pure, strategy):
        train_many, eval_many, add = real(pure, strategy)

        def train_one_at_a_time(state, batch, step, inputs, **kwargs):
            if len(inputs.seed) > 1:
                raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory (simulated)")
            return train_many(state, batch, step, inputs, **kwargs)

        return train_one_at_a_time, eval_many, add

    monkeypatch.setattr(stacked, "stacked_steps", tight_memory)
    lines = []
    runs = sweep.members(_config(epochs=3), {"loss.alpha": [0.3, 0.6]}, [0, 1])
    again = sweep.train_members(runs, copy, sources=sources, resume=True, log=lines.append)
    assert "sweep: 4 members do not fit the device memory together; training in chunks of 2" in (
        lines
    )
    assert "sweep: 2 members do not fit the device memory together; training in chunks of 1" in (
        lines
    )
    auto = sweep.AUTO_STRATEGY[jax.default_backend()]
    assert f"sweep: trained member 4 of 4 (chunks of 1, strategy {auto})" in lines
    for before, after in zip(result.records, again.records, strict=True):
        assert [r["epoch"] for r in after] == [1, 2, 3]
        assert after[:2] == before  # the finished epochs are kept as they were
        assert math.isfinite(after[2]["train_loss"]) and 0.0 <= after[2]["iou"] <= 1.0
    member = copy / "alpha=0.6" / "seed1"
    assert train.evaluate_checkpoint(member, best=False, sources=sources)["epoch"] == 3
    assert json.loads((copy / "sweep.json").read_text())["chunk"] == 1


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_a_resumed_sweep_trains_members_at_different_positions_as_chunks_of_their_own(
    swept, sources, tmp_path
):
    """A member resumed alone (here one epoch ahead of the others) does not stop ``--resume``:
    the members at each checkpoint position are trained as chunks of their own, each ending
    at the last epoch with its earlier records kept."""
    workdir, result = swept
    copy = tmp_path / "sweep"
    shutil.copytree(workdir, copy)
    ahead = copy / "alpha=0.6" / "seed0"
    config = train.load_config(ahead)
    config.epochs = 3
    train.train_and_evaluate(config, ahead, resume=True, sources=sources)
    lines = []
    runs = sweep.members(_config(epochs=4), {"loss.alpha": [0.3, 0.6]}, [0, 1])
    again = sweep.train_members(runs, copy, sources=sources, resume=True, log=lines.append)
    auto = sweep.AUTO_STRATEGY[jax.default_backend()]
    assert lines[:4] == [
        "sweep: members 1-4 continue from 2 different checkpoint positions; "
        "training members 1, 2, 4 first",
        f"sweep: trained members 1, 2, 4 of 4 (chunks of 4, strategy {auto})",
        f"sweep: trained member 3 of 4 (chunks of 4, strategy {auto})",
        f"{copy / 'alpha=0.3' / 'seed0'}: epoch 4 iou {again.records[0][-1]['iou']:.3f} "
        f"oii {again.records[0][-1]['oii']:+.3f}",
    ], lines
    for before, after in zip(result.records, again.records, strict=True):
        assert [r["epoch"] for r in after] == [1, 2, 3, 4]
        assert after[:2] == before
    member = train.evaluate_checkpoint(ahead, best=False, sources=sources)
    assert member["epoch"] == 4


def _host(tree) -> list[np.ndarray]:
    """The leaves as NumPy arrays (random keys as their key data)."""
    keys = jax.dtypes.prng_key
    return [
        np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, keys) else x)
        for x in jax.tree.leaves(tree)
    ]


def test_every_strategy_steps_each_member_as_its_separate_run():
    """One training step of 2 members (own parameters, alpha and augmentation seed) with each
    strategy against the single run's step of each, to float32 rounding (XLA may order a
    sum differently in another program)."""
    from dibe_jax import losses
    from dibe_jax.data.augment import AugmentConfig
    from dibe_jax.data.device_augment import DevicePreprocess
    from dibe_jax.train import member_steps, step

    mesh = train.make_mesh(jax.devices()[:1])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8)
    masks = (rng.random((2, 4, 32, 32, 1)) < 0.05).astype(np.uint8)
    states, members = [], []
    for j, alpha in enumerate((0.3, 0.6)):
        config = tiny_config(seed=j, **{"loss.name": "tversky"})
        tg, eg, state = train.make_state(config, in_channels=3)
        prep = DevicePreprocess(augment=AugmentConfig(), seed=j)
        tversky = losses.get("tversky")
        members.append(step.make_steps(tg, eg, tversky, {"alpha": alpha}, mesh, preprocess=prep))
        states.append(state)
    copy = lambda tree: jax.tree.map(jnp.array, tree)  # noqa: E731 - the steps donate states
    separate = [
        m.train(copy(s), {"image": images[j], "mask": masks[j]}, 3)
        for j, (m, s) in enumerate(zip(members, states, strict=True))
    ]
    inputs = step.StepInputs(
        {key: jnp.stack([m.inputs.loss[key] for m in members]) for key in members[0].inputs.loss},
        jnp.stack([m.inputs.seed for m in members]),
    )
    batches = {"image": jnp.asarray(images), "mask": jnp.asarray(masks)}
    for strategy in member_steps.STRATEGIES:
        train_many = member_steps.stacked_steps(members[0].pure, strategy)[0]
        stacked_states = jax.tree.map(lambda *xs: jnp.stack(xs), *map(copy, states))
        together, stats = train_many(stacked_states, batches, 3, inputs)
        for j, (alone, alone_stats) in enumerate(separate):
            mine = jax.tree.map(lambda x, j=j: x[j], together)
            pairs = zip(_host(mine), _host(alone), strict=True)
            assert float(stats["loss"][j]) == pytest.approx(float(alone_stats["loss"]), 1e-5)
            for a, b in pairs:
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=strategy)


class _SignalAfter:
    """Stands in for :class:`~dibe_jax.train.launch.Signals`: SIGINT "arrives" once the
    members have read ``steps`` training batches each."""

    def __init__(self, reads: list, steps: int, members: int) -> None:
        self.reads, self.after = reads, steps * members

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    @property
    def received(self):
        return signal.SIGINT if len(self.reads) >= self.after else None


def _comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_a_signal_saves_every_member_and_the_resumed_sweep_equals_the_uninterrupted(
    swept, sources, tmp_path, monkeypatch
):
    """SIGINT in the middle of epoch 2 (of 2; 4 steps an epoch): every member saves its
    state, data position and running loss after the current step, and ``--resume`` ends
    with the records of the sweep that was never interrupted."""
    _, whole = swept
    runs = sweep.members(_config(), {"loss.alpha": [0.3, 0.6]}, [0, 1])
    reads: list[int] = []
    real = in_memory.Batches.host_batch

    def counted(self, index):
        if self.train:
            reads.append(index)
        return real(self, index)

    monkeypatch.setattr(in_memory.Batches, "host_batch", counted)
    monkeypatch.setattr(stacked, "Signals", lambda: _SignalAfter(reads, 6, len(runs)))
    with pytest.raises(train.Interrupted) as stop:
        sweep.train_members(runs, tmp_path / "s", sources=sources)
    assert (stop.value.step, stop.value.epoch, stop.value.workdir) == (6, 1, tmp_path / "s")
    member = tmp_path / "s" / "alpha=0.6" / "seed1"
    lines = (member / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1]  # epoch 2 was not finished
    monkeypatch.undo()
    again = sweep.train_members(runs, tmp_path / "s", sources=sources, resume=True)
    for before, after in zip(whole.records, again.records, strict=True):
        assert _comparable(after) == _comparable(before)


@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_a_signal_in_a_later_chunk_names_the_sweep_and_a_resume_finishes_every_member(
    swept, sources, tmp_path, monkeypatch
):
    """Chunks of 2 members (each chunk's members share a setting's folder): SIGINT during
    the second chunk names the sweep's folder, and ``--resume`` takes the finished first
    chunk and the interrupted second one together, each from where it stopped."""
    _, whole = swept
    runs = sweep.members(_config(), {"loss.alpha": [0.3, 0.6]}, [0, 1])
    reads: list[int] = []
    real = in_memory.Batches.host_batch

    def counted(self, index):
        if self.train:
            reads.append(index)
        return real(self, index)

    monkeypatch.setattr(in_memory.Batches, "host_batch", counted)
    # 2 members x (8 steps of the first chunk + 5 of the second)
    monkeypatch.setattr(stacked, "Signals", lambda: _SignalAfter(reads, 13, 2))
    with pytest.raises(train.Interrupted) as stop:
        sweep.train_members(runs, tmp_path / "s", sources=sources, chunk=2)
    assert (stop.value.step, stop.value.epoch, stop.value.workdir) == (5, 1, tmp_path / "s")
    assert f"every member's folder in {tmp_path / 's'}" in str(stop.value)
    monkeypatch.undo()
    lines = []
    again = sweep.train_members(
        runs, tmp_path / "s", sources=sources, resume=True, log=lines.append
    )
    assert lines[0] == (
        "sweep: members 1-4 continue from 2 different checkpoint positions; "
        "training members 1-2 first"
    )
    for before, after in zip(whole.records, again.records, strict=True):
        assert [r["epoch"] for r in after] == [1, 2]
        for a, b in zip(after, before, strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
            assert a["iou"] == pytest.approx(b["iou"], abs=1e-3)


def test_an_interrupted_sweep_says_how_to_resume_it(monkeypatch, tmp_path, capsys):
    def interrupted(runs, workdir, **kwargs):
        raise train.Interrupted(signal.SIGINT, 7, 1, Path(workdir), resume="unused")

    monkeypatch.setattr(sweep, "train_members", interrupted)
    wd = str(tmp_path / "s")
    rc = cli.main(["sweep", "--workdir", wd, "--sweep", "loss.alpha=0.3,0.5", "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 130 and "step 7" in err
    assert f"resume with: dibe-jax sweep --workdir {wd} --sweep loss.alpha=0.3,0.5 --resume" in err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (["model.width=4,8"], "--sweep model.width: model.width would change the compiled"),
        (["batch_size=4,8"], "--sweep batch_size: batch_size would change the compiled"),
        (["loss.include_background=0,1"], "takes no real-valued hyperparameter"),
        (["optim.grad_clip=0.5,1"], "optim.grad_clip would change the compiled program"),
        (["loss.alpha"], "expected FIELD=V1,V2"),
        (["loss.alpha=0.3,x"], "expected comma-separated numbers"),
    ],
)
def test_fields_that_change_the_program_are_refused_in_one_line(spec, message, tmp_path, capsys):
    rc = cli.main(
        ["sweep", "--workdir", str(tmp_path / "s"), "--loss", "tversky"]
        + [a for s in spec for a in ("--sweep", s)]
    )
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()
