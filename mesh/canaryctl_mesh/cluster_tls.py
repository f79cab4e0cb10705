"""The TLS settings of the controller's own Kubernetes client (in-cluster or from a kubeconfig), for
the other clients that talk to the API server as the controller does."""

from __future__ import annotations

import ssl
from typing import Protocol


class TlsConfiguration(Protocol):
    """What is read of a ``kubernetes.client.Configuration`` for TLS."""

    verify_ssl: bool
    ssl_ca_cert: str | None
    cert_file: str | None
    key_file: str | None


def tls_context(configuration: TlsConfiguration, client_certificate: bool = True) -> ssl.SSLContext:
    """The cluster's CA (or no verification, as configured) and, when asked, the client certificate."""
    if configuration.verify_ssl:
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_certificate and configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context
