import os

from hypothesis import HealthCheck, settings

# "ci" keeps the suite fast on 2 cores; "thorough" is for hunting counterexamples:
#   HYPOTHESIS_PROFILE=thorough pytest tests/
settings.register_profile("ci", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
