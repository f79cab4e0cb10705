"""Suite-wide settings."""

import os

from hypothesis import settings

# CI must not fail on an example nobody has seen before: there, property tests replay the same
# examples every run. Locally they keep exploring (and keep failures in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
