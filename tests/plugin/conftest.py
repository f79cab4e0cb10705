"""The shared kmock emulator fixtures (see tests/kube/emulator.py) and the browser (tests/browser.py)."""

from tests.browser import browser  # noqa: F401
from tests.kube.emulator import emulator, kube_api, objects  # noqa: F401
