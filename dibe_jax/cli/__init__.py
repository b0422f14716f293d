"""The ``dibe-jax`` command: a thin front door over the library's modules.

Subcommands:
  train        train a model with a loss on a dataset (checkpoints, metrics, plots).
  eval         evaluate a run's best (or latest) checkpoint on a split.
  predict      write mask and overlay PNGs for image files with a run's checkpoint.
  calibrate    choose a binary run's logit threshold on validation (OII to 0, or best IoU).
  export       write a run's model as StableHLO (jax.export) and ONNX, with what a consumer needs.
  oii-search   OII-guided bisection of a loss hyperparameter (Appendix C), or a grid; on a
               binary run's OII, or a multi-class run's macro OII or one class's OII.
  analyze      Table 1 and the gradient/OII figures of the DIBE paper (PNG files).
  losses       list the registered losses with their hyperparameters.
  configs      list the shipped configs (the paper's settings, ``--config NAME``).
  data stats   per-split statistics of a dataset next to the paper's Table 2.

A user error (a flag, a config value, a name, a file) prints one line
``dibe-jax: error: ...`` and exits with status 2; anything else is a bug: its traceback is
printed with a line asking to report it, and the status is 1.

This module is the entry point (:func:`main`: error printing, logging); ``parser`` builds
the argument parser, ``commands`` holds one function per subcommand and ``options`` the
training options several subcommands share, with the flags -> config plumbing.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence

# A run's config from parsed arguments, as the command builds it (tests call it).
from dibe_jax.cli.options import config_from_args as _config_from_args  # noqa: F401
from dibe_jax.cli.parser import build_parser


def _config_dot_flags(argv: Sequence[str]) -> list[str]:
    """``--config.loss.alpha=0.7`` / ``--config.loss.alpha 0.7`` -> ``--set loss.alpha=0.7``
    (the Flax-examples and big_vision spelling of an override)."""
    out, i = [], 0
    argv = list(argv)
    while i < len(argv):
        a = argv[i]
        if a.startswith("--config."):
            key, eq, value = a[len("--config.") :].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    out.append(a)  # argparse reports it
                    break
                value, i = argv[i + 1], i + 1
            out += ["--set", f"{key}={value}"]
        else:
            out.append(a)
        i += 1
    return out


def _one_line(e: BaseException) -> str:
    lines = [x for x in str(e).strip().splitlines() if x.strip()]
    if len(lines) > 1 and lines[1].startswith("hint: "):  # a short second line that helps
        return f"{lines[0]}\n{lines[1]}"
    return lines[0] if lines else type(e).__name__


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced, e.g. by tests)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging() -> None:
    logger = logging.getLogger("dibe_jax")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("dibe-jax: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dibe-jax`` console script.

    User errors (:class:`dibe_jax.errors.UserError`: bad flags, config values, names, files,
    checkpoints) print one line ``dibe-jax: error: ...`` to stderr and return 2 (``--debug``
    raises them instead); an interrupted training returns 130 (SIGINT) or 143 (SIGTERM)
    after saving; any other exception is a bug: its traceback, a line saying so, status 1.
    """
    given = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(_config_dot_flags(given))
    args.argv = given  # the command as typed, for the line that says how to resume it
    _setup_logging()
    from dibe_jax.errors import UserError
    from dibe_jax.train import compile_cache

    # Entry-point setting: compiled programs persist between launches (unless configured).
    if args.no_compile_cache:
        compile_cache.disable()
    else:
        compile_cache.enable()
    from dibe_jax.train import Interrupted, NonFiniteError

    try:
        return args.func(args)
    except Interrupted as e:
        print(f"dibe-jax: interrupted by {e}", file=sys.stderr)
        print(f"resume with: {e.resume}", file=sys.stderr)
        return 128 + int(e.signum)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("dibe-jax: interrupted", file=sys.stderr)
        return 130
    except NonFiniteError as e:
        if args.debug:
            raise
        print(f"dibe-jax: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except UserError as e:
        if args.debug:
            raise
        print(f"dibe-jax: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of our output went away (`dibe-jax configs | head`)
        try:  # Python's flush at exit would fail on the closed pipe again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is no file here (replaced, e.g. by a test)
            pass
        return 141
    except Exception:  # noqa: BLE001 - a bug: shown in full, never as a user's mistake
        if args.debug:
            raise
        traceback.print_exc()
        print(
            "dibe-jax: internal error (a bug): please report it with the traceback above",
            file=sys.stderr,
        )
        return 1
