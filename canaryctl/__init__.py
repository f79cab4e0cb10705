"""canaryctl: progressive delivery for Kubernetes with an included Envoy mesh."""

__version__ = "0.1.0"
