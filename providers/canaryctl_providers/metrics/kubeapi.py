"""The controller's own way into the Kubernetes API, for metric providers that read metrics there (the
external metrics API, Keptn), bounded like every other metric query.

What an aggregated API such as ``external.metrics.k8s.io`` answers comes from an adapter behind the API
server and depends on what tenants configured (a KEDA scaler's server, an adapter rule), so these
calls get the deadline, body cap and shortened errors of any metric query, which the Kubernetes client
(a timeout per socket read, bodies read whole) does not give.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from canaryctl_mesh.cluster_tls import TlsConfiguration, tls_context
from canaryctl_providers.metrics.transport import DEFAULT_TIMEOUT, Endpoint, parse_json


class ClientConfiguration(TlsConfiguration, Protocol):
    """What is read of a ``kubernetes.client.Configuration`` (in-cluster or from a kubeconfig)."""

    host: str

    def get_api_key_with_prefix(self, identifier: str, alias: str | None = None) -> str | None: ...


class ClusterApi:
    """The ``KubeApi`` port: JSON requests to the API server within DEFAULT_TIMEOUT seconds each.

    ``authorization`` gives the controller's Authorization header at each call (a projected
    ServiceAccount token rotates). A call with a template's own ``token`` sends that token alone: not
    the controller's token, nor its client certificate.
    """

    def __init__(
        self,
        server: str,
        tls: ssl.SSLContext,
        anonymous_tls: ssl.SSLContext,
        authorization: Callable[[], str | None],
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.server = server.rstrip("/")
        self._tls = tls
        self._anonymous_tls = anonymous_tls
        self._authorization = authorization
        self._timeout = timeout

    @classmethod
    def from_configuration(cls, configuration: ClientConfiguration) -> ClusterApi:
        """The server, CA, client certificate and bearer token the controller's own client uses."""
        return cls(
            configuration.host,
            tls_context(configuration, client_certificate=True),
            tls_context(configuration, client_certificate=False),
            lambda: configuration.get_api_key_with_prefix("BearerToken"),
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        token: str | None = None,
    ) -> Any:
        if token is not None:
            headers, tls = [("Authorization", f"Bearer {token}")], self._anonymous_tls
        else:
            authorization = self._authorization()
            headers, tls = ([("Authorization", authorization)] if authorization else []), self._tls
        endpoint = Endpoint(self.server, headers, timeout=self._timeout, tls=tls)
        return parse_json(await endpoint.send(method, path, params=params, json_body=body))
