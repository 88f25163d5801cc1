"""Shared test settings: hypothesis profiles sized for CI (2 cores), and one torch thread per xdist worker."""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):  # one xdist worker per core already: torch's own thread pool would
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # wait on busy cores at every op (100x slower on small tensors)

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("FPSIM_HYPOTHESIS_PROFILE", "ci"))
