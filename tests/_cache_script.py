"""Subprocess entry for the compile-cache test: one tiny run, then what XLA compiled.

    python tests/_cache_script.py WORKDIR

Prints one JSON line: ``{"compiled": [[fun_name, from_cache], ...], "cache_dir": ...}``,
every program this process compiled or loaded from the persistent cache, in order.
"""

from __future__ import annotations

import json
import os
import sys

if __name__ == "__main__":
    sys.modules["torch"] = None  # tensorboardX would import it (see _train_script.py)


def main() -> None:
    import jax
    from jax import monitoring

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _train_script import make_examples, tiny_config

    from dibe_jax import train

    compiled: list[list] = []
    hit = [False]

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/compilation_cache/cache_retrieval_time_sec":
            hit[0] = True
        elif event == "/jax/core/compile/backend_compile_duration":
            compiled.append([str(kwargs.get("fun_name")), hit[0]])
            hit[0] = False

    monitoring.register_event_duration_secs_listener(listener)
    sources = {"train": make_examples(8, 0), "validation": make_examples(4, 1)}
    config = tiny_config(epochs=1, batch_size=4)
    train.train_and_evaluate(config, sys.argv[1], sources=sources)
    print(json.dumps({"compiled": compiled, "cache_dir": jax.config.jax_compilation_cache_dir}))


if __name__ == "__main__":
    main()
