"""Shared test settings: hypothesis profiles sized for CI (2 cores, about 10 minutes for the suite)."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("FPSIM_HYPOTHESIS_PROFILE", "ci"))
