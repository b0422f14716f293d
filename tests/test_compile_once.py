"""One compilation per input shape: loss hyperparameters and seeds are inputs of the jitted
steps, so a search over α and seeds compiles the train and eval steps once; evaluation
counts stay exact past 2**31 pixels."""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dibe_jax import losses, train, tuning
from dibe_jax.data import device_augment as dev
from dibe_jax.data.augment import AugmentConfig
from dibe_jax.train import member_steps, runs, step, sweep

sys.path.insert(0, str(Path(__file__).parent))
from _train_script import make_examples, tiny_config  # noqa: E402


@pytest.fixture
def compiled_functions():
    """The name of every function XLA compiles (or loads from the persistent cache) while
    the test runs, from JAX's own monitoring event."""
    from jax import monitoring

    names: list[str] = []

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(str(kwargs.get("fun_name")))

    monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("together", [True, False])
@pytest.mark.slow  # end to end: trains or converts (make test-slow)
def test_a_search_of_3_values_and_2_seeds_compiles_each_step_once(
    together, tmp_path, compiled_functions
):
    """The OII-guided search's glue (``train_seeds`` per value) over 3 values x 2 seeds, on
    the device data path with augmentation: one compilation of the training program and one
    of the evaluation program for the 6 runs (before, each (α, seed) pair compiled its own):
    the seeds of a value as the members of one sweep (``together``), or one run after
    another (the single run's ``train_step`` and ``eval_step``)."""
    jax.clear_caches()
    step._STEPS.clear()
    step._JITTED.clear()
    member_steps.stacked_steps.cache_clear()
    sources = {"train": make_examples(8, 0), "validation": make_examples(4, 1)}
    base = tiny_config(epochs=1, batch_size=4, **{"loss.name": "tversky", "data.augment": True})
    trained = []

    def run(value: float) -> dict:
        config = runs.with_hyperparameter(base, "alpha", value)
        result = runs.train_seeds(
            config, tmp_path / f"alpha={value:g}", [0, 1], sources=sources, together=together
        )
        trained.append((value, result.seeds))
        return runs.search_metrics(result)

    tuning.oii_search(run, max_runs=3)
    assert len(trained) == 3 and {tuple(s) for _, s in trained} == {(0, 1)}
    assert len({v for v, _ in trained}) == 3
    counts = collections.Counter(compiled_functions)
    if together and sweep.AUTO_STRATEGY[jax.default_backend()] == "loop":
        assert counts["jit(train_member)"] == 1 and counts["jit(evaluate_member)"] == 1, counts
        assert counts["jit(train_step)"] == 0
    elif together:
        assert counts["jit(train_members)"] == 1 and counts["jit(evaluate_members)"] == 1, counts
        assert counts["jit(train_step)"] == 0
    else:
        assert counts["jit(train_step)"] == 1 and counts["jit(eval_step)"] == 1, counts


def test_runs_that_differ_in_inputs_share_the_jitted_steps():
    config = tiny_config()
    tg, eg, _ = train.make_state(config, in_channels=3)
    mesh = train.make_mesh()
    tversky = losses.get("tversky")
    prep = dev.DevicePreprocess(augment=AugmentConfig(), seed=0)
    a = train.make_steps(tg, eg, tversky, {"alpha": 0.3, "beta": 0.7}, mesh, preprocess=prep)
    prep = dev.DevicePreprocess(augment=AugmentConfig(), seed=5)
    b = train.make_steps(tg, eg, tversky, {"alpha": 0.6, "beta": 0.4}, mesh, preprocess=prep)
    assert a is not b and a.train_jit is b.train_jit and a.evaluate_jit is b.evaluate_jit
    assert float(b.inputs.loss["alpha"]) == pytest.approx(0.6) and int(b.inputs.seed) == 5
    # An int hyperparameter stays a constant of the step (it may pick a formula).
    c = train.make_steps(tg, eg, losses.get("focal"), {"gamma": 2, "lam": 0.25}, mesh)
    assert c.inputs.loss.keys() == {"lam"}


def test_traced_hyperparameters_and_seed_give_the_constants_values():
    """A loss with its hyperparameters as arrays equals the loss with Python floats; an
    augmentation seed as an array draws what the Python int draws."""
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 8, 8, 1)), jnp.float32)
    labels = jnp.asarray(rng.random((2, 8, 8, 1)) < 0.1, jnp.float32)
    params = {"alpha": 0.3, "beta": 0.7, "gamma": 2.0, "lam": 0.25, "theta": 0.5, "eps": 1.0}
    dibe = losses.get("dibe")
    const = jax.jit(lambda z, y: dibe(z, y, **params))(logits, labels)
    traced, static = step.split_loss_params(params)
    inputs = step.step_inputs(traced, 0).loss
    as_input = jax.jit(lambda z, y, h: dibe(z, y, **static, **h))(logits, labels, inputs)
    np.testing.assert_allclose(np.asarray(as_input), np.asarray(const), rtol=1e-6)
    images = jnp.asarray(rng.integers(0, 256, (4, 8, 8, 3)), jnp.uint8)
    masks = jnp.zeros((4, 8, 8, 1), jnp.uint8)
    prep = dev.DevicePreprocess(augment=AugmentConfig(), seed=7)
    want, _ = jax.jit(lambda: prep.train(3, images, masks, None))()  # the seed a constant
    unseeded = dev.DevicePreprocess(augment=AugmentConfig())
    got, _ = jax.jit(lambda s: unseeded.train(3, images, masks, None, seed=s))(
        jnp.asarray(7, jnp.int32)
    )
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_evaluation_counts_are_exact_past_2_to_the_31():
    """Counts carry from the low ``uint32`` word into the high one: 3 * 2**31 + 5 pixels."""
    total = step.zero_totals()["tp"]
    add = jax.jit(step._add_count)
    for count in (2**31 - 1, 2**31 - 1, 2**31 - 1, 2**31 - 1, 2**31 - 1, 2**31 - 1, 11):
        total = add(total, jnp.asarray(count, jnp.int32))
    totals = {**step.zero_totals(), "tp": total}
    assert step.read_totals(totals)["tp"] == 6 * (2**31 - 1) + 11 == 3 * 2**32 + 5
    cm = step.zero_totals(3)["cm"]
    big = jnp.full((3, 3), 2**31 - 1, jnp.int32)
    for _ in range(4):
        cm = add(cm, big)
    got = step.read_totals({**step.zero_totals(3), "cm": cm})["cm"]
    assert got.dtype == np.int64 and np.all(got == 4 * (2**31 - 1))


def test_runs_that_differ_in_seed_and_optimiser_numbers_share_one_program(compiled_functions):
    """The parameters' seed is an input of the program that draws them, and the learning
    rate, momentum and schedule length live in the optimiser state: two runs that differ in
    these share the graph definitions and the jitted steps, and the second run's model is
    drawn without a compilation."""
    a = tiny_config(**{"optim.schedule": "cosine", "epochs": 2})
    b = tiny_config(
        **{"optim.schedule": "cosine", "epochs": 3, "seed": 4, "optim.lr": 0.05},
        **{"optim.momentum": 0.5},
    )
    tg, eg, state_a = train.make_state(a, in_channels=3, steps_per_epoch=5)
    compiled_functions.clear()
    tg_b, eg_b, state_b = train.make_state(b, in_channels=3, steps_per_epoch=5)
    assert compiled_functions == []
    assert tg_b == tg and eg_b == eg
    mesh = train.make_mesh()
    from dibe_jax.train.state import loss_steps

    steps_a = loss_steps(a, tg, eg, mesh, num_classes=1)
    steps_b = loss_steps(b, tg_b, eg_b, mesh, num_classes=1)
    assert steps_a.train_jit is steps_b.train_jit
    hyper_a = state_a[1]["opt_state"]["hyperparams"]
    hyper_b = state_b[1]["opt_state"]["hyperparams"]
    assert float(hyper_a["learning_rate"][...]) == pytest.approx(0.01)
    assert float(hyper_b["learning_rate"][...]) == pytest.approx(0.05)
    assert float(hyper_b["momentum"][...]) == pytest.approx(0.5)
    assert float(hyper_a["decay_steps"][...]) == 10 and float(hyper_b["decay_steps"][...]) == 15
    from flax import nnx

    from dibe_jax.train.state import _create_model

    def leaves(tree):
        return [
            np.asarray(
                jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
            )
            for x in jax.tree.leaves(tree)
        ]

    options = (("width", 4), ("num_stages", 1), ("dtype", np.float32))
    eager = leaves(nnx.state(_create_model("unet", 3, 1, 4, options)))  # seed 4, not traced
    for got, want in zip(leaves(state_b[0]), eager, strict=True):
        np.testing.assert_array_equal(got, want)
    assert any(np.any(x != y) for x, y in zip(leaves(state_a[0]), eager, strict=True))


@pytest.mark.parametrize(
    "schedule, step_epochs, grad_clip",
    [("constant", [], None), ("cosine", [], None), ("step", [1, 2], None), ("cosine", [], 0.5)],
)
def test_the_optimiser_updates_as_optax_sgd_with_its_schedule(schedule, step_epochs, grad_clip):
    """Our SGD, its numbers in the state, gives ``optax.sgd`` with ``optax``'s own schedule
    (and ``clip_by_global_norm``) over steps that cross the boundaries: bit for bit, but
    for the cosine schedule, where XLA folds optax's constants (``pi / decay_steps``, ``0.5
    * lr``) into one and so rounds differently by an ulp."""
    import optax

    from dibe_jax.train.state import _optimizer

    config = tiny_config(
        **{"optim.schedule": schedule, "optim.step_epochs": step_epochs, "epochs": 3},
        **{"optim.grad_clip": grad_clip, "optim.lr": 0.1, "optim.momentum": 0.8},
    )
    steps_per_epoch = 2
    tx, values = _optimizer(config, steps_per_epoch)
    lr = {
        "constant": 0.1,
        "cosine": optax.cosine_decay_schedule(0.1, 3 * steps_per_epoch),
        "step": optax.piecewise_constant_schedule(0.1, {2: 0.1, 4: 0.1}),
    }[schedule]
    want_tx = optax.sgd(lr, momentum=0.8)
    if grad_clip is not None:
        want_tx = optax.chain(optax.clip_by_global_norm(grad_clip), want_tx)
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
    state, want_state = tx.init(params), want_tx.init(params)
    state.hyperparams.update(
        {k: jnp.asarray(v, state.hyperparams[k].dtype) for k, v in values.items()}
    )
    got, want = params, params
    update, want_update = jax.jit(tx.update), jax.jit(want_tx.update)
    for _ in range(7):
        grads = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
        u, state = update(grads, state, got)
        got = optax.apply_updates(got, u)
        with jax.numpy_dtype_promotion("standard"):  # optax's cosine schedule needs it
            u, want_state = want_update(grads, want_state, want)
        want = optax.apply_updates(want, u)
        rtol = 1e-6 if schedule == "cosine" else 0
        np.testing.assert_allclose(np.asarray(got["w"]), np.asarray(want["w"]), rtol=rtol)
