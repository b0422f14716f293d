"""Forward+backward speed of the multi-class losses, side by side with softmax cross-entropy.

For each loss: ``jax.value_and_grad`` of the batch mean, jitted, on float32 logits
``[B, H, W, C]`` (Cityscapes-sized ``[8, 512, 1024, 19]`` by default) with integer labels
whose class frequencies fall off like ``1 / (c + 1)^2`` (a long tail, as in street scenes);
the median of ``--repeats`` runs after a warm-up (which also compiles), and the ratio to
``softmax_cross_entropy``, whose run is paired with each run of the loss (see
:func:`time_loss`). The cross dropout focal loss takes ``T``
stacked passes (``--mc-passes``, 5 in the paper), so its input is ``T`` times larger. The
Lovász-softmax loss sorts every class's pixel errors and is reported in its own table.

    python -m benchmarks.losses_multiclass --out benchmarks/results/losses_multiclass_cpu.md
    python -m benchmarks.losses_multiclass --shape 2 128 256 19 --repeats 3   # a quick run
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import cpu_name
from dibe_jax import losses

NAMES = [
    "softmax_cross_entropy",
    "balanced_cross_entropy",
    "softmax_focal",
    "dice_multiclass",
    "tversky_multiclass",
    "focal_tversky_multiclass",
    "dibe_dis_multiclass",
    "dibe_reg_multiclass",
    "dibe_multiclass",
    "unified_focal",
    "pf_loss",
    "cross_dropout_focal",
]
SORTING = ["lovasz_softmax"]


def _seconds(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _step(name: str, passes: int):
    loss = losses.get(name)
    if name == "cross_dropout_focal":  # T passes: the logits plus T - 1 shifted copies
        offsets = jnp.linspace(-0.5, 0.5, passes)

        def mean_loss(a, b):
            return jnp.mean(loss(a[None] + offsets[:, None, None, None, None], b))
    else:

        def mean_loss(a, b):
            return jnp.mean(loss(a, b))

    return jax.jit(jax.value_and_grad(mean_loss))


def time_loss(name: str, z, y, repeats: int, passes: int, base=None) -> dict:
    """Median time of ``repeats`` runs after a warm-up; with ``base`` (a compiled softmax CE
    step), each run of the loss is paired with a run of ``base`` right before it, and the ratio
    is the median of the per-pair ratios, which a load that drifts during the run disturbs
    less than a ratio of two medians taken minutes apart."""
    t = time.perf_counter()
    compiled = _step(name, passes).lower(z, y).compile()
    compile_s = time.perf_counter() - t
    run = lambda: jax.block_until_ready(compiled(z, y))  # noqa: E731
    run()  # warm-up
    times, ratios = [], []
    for _ in range(repeats):
        b = _seconds(lambda: jax.block_until_ready(base(z, y))) if base is not None else None
        times.append(_seconds(run))
        if b is not None:
            ratios.append(times[-1] / b)
    value, grad = compiled(z, y)
    finite = bool(jnp.isfinite(value)) and bool(jnp.all(jnp.isfinite(grad)))
    return {
        "seconds": statistics.median(times),
        "compile": compile_s,
        "value": float(value),
        "finite": finite,
        "ratio": statistics.median(ratios) if ratios else 1.0,
        "compiled": compiled,
    }


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shape", type=int, nargs=4, default=[8, 512, 1024, 19], metavar=("B", "H", "W", "C")
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mc-passes", type=int, default=5, help="T of cross_dropout_focal")
    parser.add_argument("--losses", nargs="+", default=NAMES + SORTING, choices=NAMES + SORTING)
    parser.add_argument("--out", type=Path, help="also write the Markdown tables here")
    parser.add_argument("--note", default="", help="a line added under the tables")
    args = parser.parse_args(argv)

    b, h, w, c = args.shape
    rng = np.random.default_rng(0)
    freq = 1.0 / np.arange(1, c + 1) ** 2
    z = jnp.asarray(rng.normal(scale=2.0, size=(b, h, w, c)).astype(np.float32))
    y = jnp.asarray(rng.choice(c, size=(b, h, w), p=freq / freq.sum()).astype(np.int32))

    base = time_loss("softmax_cross_entropy", z, y, args.repeats, args.mc_passes)
    print(f"softmax_cross_entropy {base['seconds'] * 1e3:.0f} ms", flush=True)
    rows = {}
    for name in args.losses:
        r = (
            base
            if name == "softmax_cross_entropy"
            else time_loss(name, z, y, args.repeats, args.mc_passes, base=base["compiled"])
        )
        rows[name] = r
        print(f"{name} {r['seconds'] * 1e3:.0f} ms ({r['ratio']:.2f}x)", flush=True)

    dev = jax.devices()[0]
    head = [
        f"Forward+backward (`jax.value_and_grad` of the batch mean, jitted) on float32 logits "
        f"{[b, h, w, c]} with integer labels (class frequency ∝ 1/(c+1)²), median of "
        f"{args.repeats} after warm-up; JAX {jax.__version__} on {dev.platform}, CPU: "
        f"{cpu_name()}, {jax.local_device_count()} device(s). Ratio: the median over the "
        f"runs of (loss time / time of `softmax_cross_entropy` run just before it); "
        f"`softmax_cross_entropy` alone took {base['seconds'] * 1e3:.0f} ms.",
        "",
    ]

    def table(names: list[str]) -> list[str]:
        out = [
            "| loss | ms | × softmax CE | compile s | finite value and grad |",
            "|---|---:|---:|---:|---|",
        ]
        for name in names:
            r = rows[name]
            label = name + (f" (T = {args.mc_passes})" if name == "cross_dropout_focal" else "")
            out.append(
                f"| {label} | {r['seconds'] * 1e3:.0f} | {r['ratio']:.2f} "
                f"| {r['compile']:.1f} | {'yes' if r['finite'] else 'NO'} |"
            )
        return out

    lines = head + table([n for n in args.losses if n in NAMES])
    sorting = [n for n in args.losses if n in SORTING]
    if sorting:
        lines += ["", "Losses that sort the pixels (one sort per class and image):", ""]
        lines += table(sorting)
    if args.note:
        lines += ["", args.note]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return text


if __name__ == "__main__":
    main()
