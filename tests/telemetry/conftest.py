"""The emulated Kubernetes API for the tests that run the operator (shared by import, see tests/kube)."""

from tests.kube.emulator import emulator, kube_api, objects  # noqa: F401
