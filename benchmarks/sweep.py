"""K runs in one program against K separate runs: the strategies of ``dibe-jax sweep``.

For K members (loss hyperparameter values of one sweep, each with its own parameters and
seed), the time of one training step of all K, steady state (after compilation), three ways:

* **separate**: the single run's jitted step (``dibe_jax.train.step.make_steps``), called for
  each member one after another: what K separate runs in one process cost;
* **vmap**: one program over the stacked members (``stacked_steps(..., "vmap")``: XLA turns
  the members' convolutions into grouped convolutions);
* **map**: one program with ``jax.lax.map`` over the members (each member's convolutions in
  the body of a loop, without a dispatch per member);
* **loop**: one call per member of a program that steps that member's slot of the stacked
  state in place (``stacked_steps(..., "loop")``: the single run's step, compiled once).

The step is the one ``dibe-jax train`` runs: U-Net, DIBE loss, SGD with momentum, ``uint8``
batches augmented on the device. Modes: ``--mode cpu`` (U-Net width 4, 32², batch 4,
K = 1, 2, 4) and ``--mode gpu`` (U-Net width 64, 160², batch 32, K = 1, 2, 4, 8: CrackForest's
setting). The ``auto`` strategy of :data:`dibe_jax.train.sweep.AUTO_STRATEGY` follows these
tables.

    python -m benchmarks.sweep --mode cpu --out benchmarks/results/sweep_cpu.md
    python -m benchmarks.sweep --mode cpu --width 8 --size 96 --batch 16 --members 2 \
        --rounds 3 --num-stages 4 --out benchmarks/results/sweep_cpu_demo.md  # make demo's
    python3 -m benchmarks.sweep --mode gpu --out benchmarks/results/sweep_gpu.md  # make bench-gpu

It is also the ``sweep`` section of ``make bench-gpu`` (``benchmarks/gpu.py``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import emit, host_line, jax_on_gpu, jax_side

#: ``vmap_max``: the largest K whose vmapped program is measured. On the H200 the vmapped
#: program ran K = 2 and 4 three times slower than separate runs, and at K = 8 it had not
#: finished compiling after 250 s (cuDNN's grouped convolutions), so the GPU mode measures it
#: up to K = 4 and the larger K with ``separate`` and ``map`` only.
MODES = {
    "cpu": {"width": 4, "size": 32, "batch": 4, "members": (1, 2, 4), "rounds": 5, "vmap_max": 8},
    "gpu": {
        "width": 64,
        "size": 160,
        "batch": 32,
        "members": (1, 2, 4, 8),
        "rounds": 20,
        "vmap_max": 4,
    },
}


def _state(width: int, seed: int, num_stages: int = 4):
    """A U-Net (paper defaults, ``width``, ``num_stages``) and its SGD optimiser as ``dibe-jax
    train`` builds them (:func:`dibe_jax.train.make_state`): ``(train graphdef, eval graphdef,
    state)``."""
    from dibe_jax import train

    values = {"model.width": width, "model.num_stages": num_stages, "seed": seed}
    config = train.override(train.Config(), values)
    return train.make_state(config, in_channels=3)


def _timed(fn, rounds: int) -> float:
    """Median seconds of ``fn()`` (which blocks) over ``rounds`` calls after 2 warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(
    k: int,
    *,
    width: int,
    size: int,
    batch: int,
    rounds: int,
    vmap_max: int = 8,
    num_stages: int = 4,
) -> dict[str, float]:
    """Seconds per step of all ``k`` members: separate, vmap (``k <= vmap_max``), map, loop."""
    from dibe_jax import losses
    from dibe_jax.data.augment import AugmentConfig
    from dibe_jax.data.device_augment import DevicePreprocess
    from dibe_jax.train import member_steps, step

    mesh = step.make_mesh(jax.devices()[:1])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (k, batch, size, size, 3), dtype=np.uint8)
    masks = (rng.random((k, batch, size, size, 1)) < 0.01).astype(np.uint8)
    members = []
    for j in range(k):
        tg, eg, state = _state(width, j, num_stages)
        steps = step.make_steps(
            tg,
            eg,
            losses.get("dibe"),
            {"alpha": 0.1 + 0.8 * j / max(1, k - 1), "beta": 0.7},
            mesh,
            preprocess=DevicePreprocess(augment=AugmentConfig(), seed=j),
        )
        batch_j = jax.device_put({"image": images[j], "mask": masks[j]})
        members.append([steps, jax.device_put(state), batch_j])
    counter = [0]

    def separate():
        for m in members:
            m[1], stats = m[0].train(m[1], m[2], counter[0])
        jax.block_until_ready(stats)
        counter[0] += 1

    out = {"separate": _timed(separate, rounds)}
    pure = members[0][0].pure
    stacked_batch = jax.device_put({"image": images, "mask": masks})
    inputs = step.StepInputs(
        {key: jnp.stack([m[0].inputs.loss[key] for m in members]) for key in ("alpha", "beta")},
        jnp.stack([m[0].inputs.seed for m in members]),
    )
    for strategy in member_steps.STRATEGIES:
        if strategy == "vmap" and k > vmap_max:
            continue
        train_many = member_steps.stacked_steps(pure, strategy)[0]
        states = [_state(width, j, num_stages)[2] for j in range(k)]
        box = [jax.tree.map(lambda *xs: jnp.stack(xs), *states)]

        def together(train_many=train_many, box=box):
            box[0], stats = train_many(box[0], stacked_batch, counter[0], inputs)
            jax.block_until_ready(stats)
            counter[0] += 1

        out[strategy] = _timed(together, rounds)
    return out


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), help="default: gpu on a GPU, else cpu")
    parser.add_argument("--members", type=int, nargs="+", help="the K to measure")
    parser.add_argument("--rounds", type=int, help="timed steps per measurement")
    parser.add_argument("--out", type=Path, help="write the Markdown table here")
    parser.add_argument("--vmap-max", type=int, help="the largest K to run vmapped")
    parser.add_argument("--num-stages", type=int, default=4, help="U-Net pooling stages")
    parser.add_argument("--width", type=int, help="U-Net width (default: the mode's)")
    parser.add_argument("--size", type=int, help="image side in pixels (default: the mode's)")
    parser.add_argument("--batch", type=int, help="batch per member (default: the mode's)")
    args = parser.parse_args(argv)
    mode = args.mode or ("gpu" if jax_on_gpu() else "cpu")
    m = dict(MODES[mode])
    m.update(
        {k: v for k, v in (("width", args.width), ("size", args.size), ("batch", args.batch)) if v}
    )
    members = tuple(args.members or m["members"])
    rounds = args.rounds or m["rounds"]
    vmap_max = args.vmap_max or m["vmap_max"]
    lines = [
        f"# One program for K runs ({mode} mode)",
        "",
        f"U-Net width {m['width']} ({args.num_stages} pooling stage(s)), {m['size']}², "
        f"batch {m['batch']} per member, DIBE loss, SGD "
        "with momentum, uint8 batches augmented on the device; milliseconds per training "
        f"step of all K members (median of {rounds} steps after compilation). separate: the "
        "single run's jitted step once per member; vmap / map: one program over the stacked "
        "members, loop: one program per member stepping its slot of the stacked state "
        "(`dibe_jax.train.member_steps.stacked_steps`). Speed-up: separate / that. "
        f"vmap runs up to K = {vmap_max} (a larger vmapped program compiles for minutes on "
        "a GPU and runs slower than the others already at K = 2).",
        "",
        f"{jax_side()}. {host_line()}.",
        "",
        "| K | separate (ms) | vmap (ms) | map (ms) | loop (ms) | vmap speed-up | map speed-up "
        "| loop speed-up | fastest |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in members:
        t = measure(
            k,
            width=m["width"],
            size=m["size"],
            batch=m["batch"],
            rounds=rounds,
            vmap_max=vmap_max,
            num_stages=args.num_stages,
        )
        best = min(t, key=t.get)
        vmap_ms = f"{t['vmap'] * 1e3:.1f}" if "vmap" in t else "not run"
        vmap_x = f"{t['separate'] / t['vmap']:.2f}x" if "vmap" in t else "—"
        lines.append(
            f"| {k} | {t['separate'] * 1e3:.1f} | {vmap_ms} | {t['map'] * 1e3:.1f} | "
            f"{t['loop'] * 1e3:.1f} | {vmap_x} | {t['separate'] / t['map']:.2f}x | "
            f"{t['separate'] / t['loop']:.2f}x | {best} |"
        )
        print(lines[-1], flush=True)
        if args.out is not None:  # the rows so far, in case a later K runs out of time
            Path(args.out).write_text("\n".join(lines) + "\n")
    return emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
