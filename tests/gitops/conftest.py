"""The operator fixtures (see tests/operator/conftest.py) for the operator-level status tests."""

from tests.kube.emulator import emulator, kube_api, objects  # noqa: F401
from tests.operator.conftest import kubelet, prometheus, short_intervals, start_operator  # noqa: F401
