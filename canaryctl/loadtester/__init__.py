"""Flagger-compatible load tester service (``canaryctl loadtester``)."""

from canaryctl.loadtester.server import LOADTESTER, LoadTester, Policy, build_app, serve

__all__ = ["LOADTESTER", "LoadTester", "Policy", "build_app", "serve"]
