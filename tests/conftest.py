"""Test-suite settings (the only place, with entry points, where global settings live)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Property tests: no per-example deadline (first calls compile), fewer examples on CI's
# 2 cores; `HYPOTHESIS_PROFILE=thorough` runs many more locally.
settings.register_profile("default", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
settings.register_profile("thorough", deadline=None, max_examples=500,
                          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
