"""Test-suite settings (the only place, with entry points, where global settings live)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, settings

# Property tests: no per-example deadline (first calls compile), fewer examples on CI's
# 2 cores; `HYPOTHESIS_PROFILE=thorough` runs many more locally.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "thorough", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# A persistent XLA compilation cache shared by the test processes and the subprocesses they
# start (training runs, fake-device checks): identical programs compile once per suite run.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"dibe_jax_xla_cache_{os.getuid()}"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


def _fast_compiling_xla() -> None:
    """Most of the suite's time is XLA:CPU compiling small programs that then run for
    milliseconds. So the test process and the subprocesses it starts (they inherit the
    environment) compile the same HLO with less work: XLA's expensive backend optimisations
    off (`jax_disable_most_optimizations`, turned back on by tests marked ``optimized``,
    whose time is spent running the program) and XLA:CPU's classic loop emitters instead
    of its newer fusion emitters (`--xla_cpu_use_fusion_emitters=false`, used only if this
    XLA knows the flag: an unknown XLA flag aborts the process). Measured on 2 cores, the
    whole suite: 718 s with XLA's defaults, 605 s with the first, 442 s with both; it
    passes either way. `DIBE_JAX_TEST_FAST_COMPILE=0 pytest` keeps XLA's defaults."""
    if os.environ.get("DIBE_JAX_TEST_FAST_COMPILE", "1") == "0":
        return
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_use_fusion_emitters" in flags:  # set by the user, or by pytest-xdist's parent
        return
    flag = "--xla_cpu_use_fusion_emitters=false"
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.devices('cpu')"],
        env={**os.environ, "XLA_FLAGS": f"{flags} {flag}".strip(), "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        timeout=120,
    )
    if probe.returncode == 0:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()


_fast_compiling_xla()


def _tensorboardx_without_torch() -> None:
    """tensorboardX (the runs' event files) imports PyTorch whenever it is installed (it is,
    for the parity tests): about 6 s of CPU in every test process that trains a run. Imported
    here with PyTorch hidden (as ``tests/_train_script.py`` does for its subprocesses), it
    writes the same event files from NumPy; PyTorch stays importable for the tests that use
    it, which import it themselves."""
    if "torch" in sys.modules:
        return
    sys.modules["torch"] = None  # `import torch` raises ImportError meanwhile
    try:
        import tensorboardX  # noqa: F401
    except ImportError:  # not installed: the runs then write no event files
        pass
    finally:
        del sys.modules["torch"]


_tensorboardx_without_torch()

import jax  # noqa: E402  (after the environment above is set)

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)

# Strict NumPy semantics in the test process (as equinox does): any implicit dtype promotion
# (e.g. float32 with a Python-side float64 array, bool with int) or implicit rank promotion
# (broadcasting a [B] array against [B, H, W]) raises, so the library must say what it means.
# Subprocesses the tests start (training scripts, CLI runs) keep JAX's defaults.
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
# Two fake CPU devices in the test process, so the data-parallel path (mesh, sharded batch,
# replicated parameters) runs in-process. Must be set before any backend is initialised.
jax.config.update("jax_num_cpu_devices", 2)


# The XLA compilations (or persistent-cache loads of one) a block of code makes, counted from
# JAX's own monitoring events; tracing and lowering are not counted. Tests that promise "caught
# before anything compiles" assert on this instead of on a wall-clock time, which a loaded
# machine stretches.
_COMPILE_EVENTS = (
    "/jax/core/compile/backend_compile_duration",
    "/jax/compilation_cache/cache_retrieval_time_sec",
)


@pytest.fixture
def compilations():
    """A list that receives the name of every compilation event while the test runs."""
    from jax import monitoring

    seen: list[str] = []

    def listener(event: str, duration: float, **kwargs) -> None:
        if event in _COMPILE_EVENTS:
            seen.append(event)

    monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        monitoring.unregister_event_duration_listener(listener)


@pytest.fixture(autouse=True)
def _xla_optimizations(request):
    """XLA's full optimisations for ``@pytest.mark.optimized`` tests (see the top)."""
    if request.node.get_closest_marker("optimized") is None:
        yield
        return
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


#: The longest tests of ``make test-slow``, longest first (seconds on two cores, from a fresh
#: clone). They come first, so the first worker of ``--dist worksteal`` starts with them while
#: the other works through the rest and steals the first's remaining short tests: both finish
#: together instead of one worker running a two-minute test alone at the end. (``--dist
#: load`` would balance as well but sets module fixtures up on both workers: one more
#: two-minute benchmark run.)
LONGEST_FIRST = (
    "tests/test_main_job.py::",  # 114 s
    "tests/test_benchmarks.py::",  # make bench-gpu's tiny mode, about 100 s
    "tests/test_analysis.py::test_notebook_executes",  # 76 s
    "tests/test_experiments.py::test_paper_scale_quick_without_tfds",  # 71 s
    "tests/test_resume.py::test_resume_after_sigkill",  # 46 s
    "tests/test_folder_dataset.py::test_a_folder_of_the_builders_tiles",  # 41 s
)


def _longest_first_rank(nodeid: str) -> int:
    return next(
        (i for i, p in enumerate(LONGEST_FIRST) if nodeid.startswith(p)), len(LONGEST_FIRST)
    )


def pytest_collection_modifyitems(config, items):
    """Long end-to-end tests (``@pytest.mark.slow``) first, the longest of them
    (:data:`LONGEST_FIRST`) before the others, each group in its file order: under
    ``pytest -n 2`` they then spread over both workers early instead of leaving one worker
    alone with a minute-long test at the end."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("slow") is None,
            _longest_first_rank(item.nodeid),
        )
    )


# ------------------------------------------------------------- shared tiny training data


@pytest.fixture(scope="session")
def sources() -> dict[str, list[dict]]:
    """In-memory synthetic cracks for tiny runs (``tests/_train_script.py``): 16 training and
    8 validation 32x32 examples. Shared by the whole test process: read only."""
    from _train_script import make_examples

    return {"train": make_examples(16, 0), "validation": make_examples(8, 1)}


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, sources):
    """``(workdir, final record)`` of a finished 2-epoch tiny run (``tiny_config(epochs=2)``:
    U-Net width 4, one stage) on ``sources``, trained once per test process and shared
    by the tests of training, evaluation, prediction and resume. Read only: a test that
    changes the run works on a copy (``shutil.copytree``)."""
    from _train_script import tiny_config

    from dibe_jax import train

    workdir = tmp_path_factory.mktemp("finished") / "run"
    record = train.train_and_evaluate(tiny_config(epochs=2), workdir, sources=sources)
    return workdir, record
