"""canaryctl: progressive delivery for Kubernetes with an included Envoy mesh."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # The version lives in the installed distribution's metadata (set from the git tag at build time);
    # looked up on first use, so starting the CLI does not pay for importlib.metadata.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("canaryctl")
        except PackageNotFoundError:  # a source tree on sys.path that was never installed
            return "0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
