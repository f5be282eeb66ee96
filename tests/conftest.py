"""Settings for every test: hypothesis runs the same examples on every run unless asked not to.

CI and the README's test command use the ``ci`` profile: derandomized (examples derived from
each test, not from a fresh seed), so a run fails only when the code changed. ``scripts/fuzz``
(``HYPOTHESIS_PROFILE=fuzz``) draws new examples, many more of them.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=5000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
