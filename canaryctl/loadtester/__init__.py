"""Flagger-compatible load tester service (``canaryctl loadtester``)."""

from canaryctl.loadtester.server import LOADTESTER, LoadTester, build_app, serve

__all__ = ["LOADTESTER", "LoadTester", "build_app", "serve"]
