"""canaryctl's included mesh: Envoy data plane, xDS control plane and sidecar injector (see docs/mesh.md)."""
