"""The shared kmock emulator fixtures (see tests/kube/emulator.py)."""

from tests.kube.emulator import emulator, kube_api, objects  # noqa: F401
