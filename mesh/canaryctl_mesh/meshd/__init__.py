"""The included mesh's long-running processes: the xDS control plane and the sidecar injector webhook."""
