"""Export a trained run's model for an inspection line: StableHLO and ONNX, verified.

:func:`export_run` writes into ``out``:

* ``model.stablehlo.bin``: the eval-mode model (BatchNorm statistics, no dropout) with its
  weights, serialised by :func:`jax.export.export` (StableHLO bytecode and its calling
  convention). Load it with ``jax.export.deserialize(data).call(x)``, from any JAX
  version that reads the serialisation version, without dibe_jax or Flax.
* ``model.onnx``: the same function converted by jax2onnx (the ``export`` extra), for ONNX
  Runtime, TensorRT, OpenVINO... Input ``image``, output ``logits``.
* ``export.json``: what a consumer needs: input layout (NHWC), dtype and normalisation
  (``uint8 / 255``, RGB or grayscale), the size rule (multiples of the network's stride,
  the symbolic and the fixed dimensions of each file and why), the classes, the decision
  rule and threshold (the run's calibrated one when it fits the checkpoint,
  :mod:`dibe_jax.train.calibrate`), and the verification.

Shapes: the batch, height and width are symbolic where the network allows it (``b``,
``m·h``, ``m·w`` for the stride ``m``): each file is tried with them first, then with
height and width fixed (``size``, default the run's training size), then with the batch
fixed to 1 too; ``export.json`` says which dimensions are fixed and the tracer's reason
(e.g. bilinear upsampling whose interpolation weights are computed for concrete sizes).
A consumer with larger images tiles them, as :func:`dibe_jax.train.predict.predict` does.

Both files are verified before anything is written: on a seeded random image of the
exported size, their logits must equal the JAX model's within ``TOLERANCE`` (ONNX through
ONNX Runtime). Everything goes to a temporary folder next to ``out`` that replaces ``out``
at the end, so a failed export leaves nothing behind.

The converter sees the model through one adapter: jax2onnx replaces ``flax.nnx.max_pool``
with a version taking keywords only, while the models call it positionally (and with
explicit padding); :func:`_onnx_max_pool` passes the arguments on as keywords (explicit
padding: a ``-inf`` pad, then ``VALID``), the same values.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from dibe_jax.errors import UserError
from dibe_jax.files import atomic_write_json
from dibe_jax.train import checks
from dibe_jax.train.checkpoints import CheckpointError, Checkpoints
from dibe_jax.train.config import ConfigError
from dibe_jax.train.workdir import load_config

__all__ = ["FORMATS", "TOLERANCE", "ExportReport", "export_run"]

#: The files :func:`export_run` can write.
FORMATS = ("stablehlo", "onnx")

#: Largest absolute logit difference accepted between an exported file and the JAX model.
TOLERANCE = 1e-4

FILES = {"stablehlo": "model.stablehlo.bin", "onnx": "model.onnx"}
OPSET = 17  # ONNX Runtime >= 1.11 runs it; MaxPool, Conv, Resize... all in it


@dataclasses.dataclass
class ExportReport:
    """What :func:`export_run` wrote: ``out``, the files, and ``export.json``'s content."""

    out: Path
    files: dict[str, Path]
    info: dict[str, Any]


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(
            f"--format: expected {', '.join(FORMATS)} or all, got {', '.join(unknown) or 'none'}"
        )
    if "onnx" in formats:
        try:
            import jax2onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise ConfigError(
                f"--format onnx: needs jax2onnx and onnxruntime ({e.name} is missing): "
                "pip install 'dibe_jax[export]', or export --format stablehlo"
            ) from None
    return formats


def _check_size(size, multiple: int, minimum: int, model: str) -> tuple[int, int]:
    rows, cols = (size, size) if np.ndim(size) == 0 else tuple(size)
    for v in (rows, cols):
        if (
            isinstance(v, bool)
            or not isinstance(v, int | np.integer)
            or v < minimum
            or v % multiple
        ):
            raise ConfigError(
                f"--size: {model} takes heights and widths that are multiples of {multiple} "
                f"and at least {minimum}; got {rows}x{cols}"
            )
    return int(rows), int(cols)


def _check_run(workdir: Path, best: bool) -> None:
    """Refuse a folder that is not a run, or a run without a checkpoint (nothing built)."""
    load_config(workdir)
    if not (workdir / "model.json").is_file():
        raise FileNotFoundError(f"{workdir / 'model.json'} not found: not a finished run")
    folder = workdir / "checkpoints"
    if not folder.is_dir():
        raise CheckpointError(f"--workdir {workdir}: no checkpoints/ folder (nothing trained)")
    ckpt = Checkpoints(folder, create=False)
    try:
        if ckpt.latest_step() is None and ckpt.best_step() is None:
            raise CheckpointError(f"--workdir {workdir}: no checkpoint in {folder}")
    finally:
        ckpt.close()


def _check_out(out: Path, workdir: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} exists and is not a folder")
    if out.resolve() == workdir.resolve():
        raise ConfigError(f"--out: {out} is the run's folder; choose a folder of its own")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out: {out} is not empty; choose another folder or --overwrite")


def _first_line(e: BaseException) -> str:
    lines = [x for x in str(e).strip().splitlines() if x.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}".strip()


def _is_shape_error(e: BaseException) -> bool:
    """Errors of a network that needs a concrete size (symbolic shapes it cannot take)."""
    text = str(e).lower()
    return type(e).__name__ in ("InconclusiveDimensionOperation", "InconclusiveDimension") or (
        isinstance(e, TypeError | ValueError | NotImplementedError)
        and any(w in text for w in ("symbolic", "polymorphic", "_dimexpr"))
    )


def _shape_candidates(
    multiple: int, minimum: int, size: tuple[int, int], channels: int
) -> list[tuple[Any, ...]]:
    """Input shapes to try, most symbolic first: ``(b, m·h, m·w)``, ``(b, H, W)``, ``(1, H, W)``."""
    out: list[tuple[Any, ...]] = []
    if minimum <= multiple:  # m·h >= m for every h >= 1: the size rule holds symbolically
        out.append(
            (
                "b",
                f"{multiple}*h" if multiple > 1 else "h",
                f"{multiple}*w" if multiple > 1 else "w",
            )
        )
    out += [("b", *size), (1, *size)]
    return [(*s, channels) for s in out]


def _spec(shape: tuple[Any, ...]) -> jax.ShapeDtypeStruct:
    dims = jax.export.symbolic_shape(", ".join(str(d) for d in shape))
    return jax.ShapeDtypeStruct(dims, jnp.float32)


def _fixed_words(shape: tuple[Any, ...], tried: list[tuple[tuple[Any, ...], str]]) -> dict:
    names = ("batch", "height", "width")
    fixed = [n for n, d in zip(names, shape, strict=False) if not isinstance(d, str)]
    return {
        "shape": [str(d) if isinstance(d, str) else int(d) for d in shape],
        "fixed": fixed,
        "why_fixed": [f"{list(s)}: {reason}" for s, reason in tried],
    }


def _export_stablehlo(fn: Callable, candidates) -> tuple[bytes, dict, Any]:
    tried: list[tuple[tuple[Any, ...], str]] = []
    for shape in candidates:
        try:
            exported = jax.export.export(jax.jit(fn))(_spec(shape))
        except Exception as e:  # noqa: BLE001 - only shape errors fall through
            if not _is_shape_error(e):
                raise
            tried.append((shape, _first_line(e)))
            continue
        return exported.serialize(), _fixed_words(shape, tried), exported
    raise UserError(f"--format stablehlo: no input shape works; {tried[-1][1]}")


def _onnx_max_pool(patched: Callable) -> Callable:
    def max_pool(x, window_shape, strides=None, padding="VALID"):
        if not isinstance(padding, str):  # explicit padding: pad with -inf, then VALID
            x = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
            padding = "VALID"
        return patched(x, window_shape=tuple(window_shape), strides=strides, padding=padding)

    return max_pool


def _onnx_adapted(fn: Callable) -> Callable:
    """``fn`` with ``flax.nnx.max_pool`` (as jax2onnx patched it) called with keywords."""
    import flax.nnx

    def adapted(x):
        patched = flax.nnx.max_pool
        flax.nnx.max_pool = _onnx_max_pool(patched)
        try:
            return fn(x)
        finally:
            flax.nnx.max_pool = patched

    return adapted


def _export_onnx(fn: Callable, candidates, model: str, size, channels) -> tuple[bytes, dict]:
    """The first candidate shape jax2onnx converts and ONNX Runtime loads and runs; the
    reasons of the ones before it (a runtime that rejects a converted graph, e.g. by its
    shape inference, counts like a shape the tracer refuses)."""
    from jax2onnx import to_onnx

    tried: list[tuple[tuple[Any, ...], str]] = []
    for shape in candidates:
        # jax2onnx takes dimension names, not expressions: b, m*h, m*w -> B, H, W
        dims = [d[-1].upper() if isinstance(d, str) else d for d in shape]
        try:
            # jax2onnx's own plugins broadcast by rank and mix dtypes: JAX's defaults for it
            with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
                proto = to_onnx(
                    _onnx_adapted(fn),
                    [tuple(dims)],
                    model_name=f"dibe_jax_{model}",
                    opset=OPSET,
                    input_names=["image"],
                    output_names=["logits"],
                )
        except Exception as e:  # noqa: BLE001 - a shape error tries the next shape
            if _is_shape_error(e):
                tried.append((tuple(dims), _first_line(e)))
                continue
            raise UserError(
                f"--format onnx: jax2onnx cannot express {model}: {_first_line(e)} "
                "(export --format stablehlo instead)"
            ) from e
        data = proto.SerializeToString()
        shape_words = _fixed_words(tuple(dims), tried)
        try:
            _ort_session(data).run(None, {"image": _sample(shape_words, size, channels)})
        except Exception as e:  # noqa: BLE001 - onnxruntime's own exception types
            tried.append((tuple(dims), "ONNX Runtime: " + _first_line(e)))
            continue
        return data, shape_words
    raise UserError(
        f"--format onnx: no input shape of {model} converts to a model ONNX Runtime runs; "
        f"{tried[-1][1]}"
    )


def _ort_session(data: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only (jax2onnx's shape notes are warnings)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _sample(shape: dict, size: tuple[int, int], channels: int) -> np.ndarray:
    """A seeded random image batch in ``[0, 1]`` of the exported shape (batch 2 if free)."""
    batch = shape["shape"][0] if not isinstance(shape["shape"][0], str) else 2
    rng = np.random.default_rng(0)
    return rng.random((batch, *size, channels), dtype=np.float32)


def export_run(
    workdir: str | Path,
    out: str | Path,
    *,
    formats: Sequence[str] = FORMATS,
    best: bool = True,
    size: int | Sequence[int] | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Write the run's model as StableHLO and/or ONNX, plus ``export.json``, verified.

    Args:
      workdir: a training run with a checkpoint.
      out: the output folder (created; an existing non-empty one only with ``overwrite``).
      formats: some of :data:`FORMATS`.
      best: the best checkpoint (the latest if there is none); False: the latest.
      size: ``S`` or ``(rows, cols)``, the height and width of files whose network needs
        them fixed (default: the run's training size); must follow the size rule.
      overwrite: replace the files of a previous export in ``out``.

    Raises:
      UserError: an unknown format, a missing converter, no run or no checkpoint, a size
        against the size rule, ``out`` not empty, a model the converter cannot express
        (with the converter's reason); nothing is written.
      RuntimeError: an exported file whose logits differ from the model's by more than
        :data:`TOLERANCE` (a converter bug); nothing is written.
    """
    from dibe_jax import models
    from dibe_jax.train.calibrate import recorded_threshold
    from dibe_jax.train.predict import load_forward

    workdir, out = Path(workdir), Path(out)
    formats = _check_formats(formats)
    _check_out(out, workdir, overwrite)
    _check_run(workdir, best)
    config = load_config(workdir)
    info = json.loads((workdir / "model.json").read_text())
    channels = int(info["in_channels"])
    name = config.model.name
    multiple, minimum = models.input_size_rule(
        name, in_channels=channels, **checks.model_options(config)
    )
    if size is None:
        size = tuple(
            -(-max(s, minimum) // multiple) * multiple
            for s in np.broadcast_to(info["image_size"], 2)
        )
    size = _check_size(size, multiple, minimum, name)

    run = load_forward(workdir, best=best)
    graphdef, state = nnx.split(run.model)

    def fn(x):  # the eval-mode model, its weights constants of the exported function
        return nnx.merge(graphdef, state)(x)

    candidates = _shape_candidates(multiple, minimum, size, channels)
    blobs: dict[str, bytes] = {}
    shapes: dict[str, dict] = {}
    verified: dict[str, float] = {}

    def check(kind: str, y: np.ndarray, ref: np.ndarray) -> None:
        diff = float(np.max(np.abs(np.asarray(y, np.float32) - ref)))
        if not diff <= TOLERANCE:
            raise RuntimeError(
                f"{kind}: exported logits differ from the model's by {diff:.3g} > {TOLERANCE} "
                "on a test image; nothing written"
            )
        verified[kind] = diff

    if "stablehlo" in formats:
        blobs["stablehlo"], shapes["stablehlo"], exported = _export_stablehlo(fn, candidates)
        x = _sample(shapes["stablehlo"], size, channels)
        back = jax.export.deserialize(bytearray(blobs["stablehlo"]))
        check("stablehlo", np.asarray(back.call(x)), np.asarray(run.forward(x)))
        del exported
    if "onnx" in formats:
        blobs["onnx"], shapes["onnx"] = _export_onnx(fn, candidates, name, size, channels)
        x = _sample(shapes["onnx"], size, channels)
        session = _ort_session(blobs["onnx"])
        check("onnx", session.run(None, {"image": x})[0], np.asarray(run.forward(x)))

    binary = run.class_names is None
    threshold = recorded_threshold(workdir, run.step) if binary else None
    record = {
        "model": name,
        "run": str(workdir.resolve()),
        "checkpoint_step": run.step,
        "files": {k: FILES[k] for k in blobs},
        "input": {
            "name": "image",
            "layout": "NHWC",
            "dtype": "float32",
            "channels": channels,
            "colour": "RGB" if channels == 3 else "grayscale (L)",
            "normalisation": "x = uint8_image / 255 (values in [0, 1]); no mean or std",
        },
        "size_rule": {
            "multiple": multiple,
            "minimum": minimum,
            "text": f"height and width: multiples of {multiple}, at least {minimum}; pad an "
            "image (reflect) up to them and crop the logits back, or tile a larger image "
            "in windows of a fixed size",
            "training_size": list(np.broadcast_to(info["image_size"], 2).tolist()),
            "exported_size": list(size),
        },
        "shapes": shapes,
        "output": {
            "name": "logits",
            "layout": "NHWC",
            "dtype": "float32",
            "channels": 1 if binary else len(run.class_names),
        },
        "class_names": list(checks.BINARY_CLASSES if binary else run.class_names),
        "decision": (
            {
                "rule": "defect where logit >= threshold (sigmoid(logit) >= sigmoid(threshold))",
                "threshold": threshold.value if threshold.value is not None else 0.0,
                "threshold_source": threshold.reason,
            }
            if binary
            else {"rule": "class id = argmax over the last axis of the logits"}
        ),
        "verified": {
            "max_abs_logit_difference": verified,
            "tolerance": TOLERANCE,
            "input": "seeded uniform random image in [0, 1] of the exported shape",
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        for kind, data in blobs.items():
            (tmp / FILES[kind]).write_bytes(data)
        atomic_write_json(tmp / "export.json", record)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp and mkstemp make them private
        os.chmod(tmp / "export.json", 0o666 & ~umask)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = {k: out / FILES[k] for k in blobs}
    return ExportReport(out, files, record)
