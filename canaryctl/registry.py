"""Routers, metric providers and notifiers are plugins, found through entry points.

A distribution offers one by naming a factory under one of three entry-point groups; the built-in ones
are registered the same way, so a third-party router is picked by ``spec.provider`` exactly like Istio:

- ``canaryctl.routers``: ``factory(objects, provider) -> Router``. The entry-point name is the value
  of ``spec.provider`` (``istio``, ``smi:v1alpha2``); one factory may serve several names.
- ``canaryctl.metrics``: ``factory(spec, secret, *, interval, scope) -> MetricsProvider``. The name
  is a MetricTemplate's ``spec.provider.type``; ``scope`` (a ``canaryctl.ports.MetricScope`` or None)
  names the template's namespace and the controller's Kubernetes API access.
- ``canaryctl.notifiers``: ``factory(spec, secret) -> Notifier``. The name is an AlertProvider's
  ``spec.type``.

Names come from the installed distributions' metadata alone, so validating a manifest imports no
provider; a factory's module is imported the first time a Canary needs it. This module sits below the
API models (they validate names against it) and imports nothing of canaryctl at run time.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # types only: the factories' contracts, for the typed helpers below
    from importlib.metadata import EntryPoint

    from canaryctl.api.models import AlertProviderSpec, MetricTemplateProvider
    from canaryctl.ports import MetricScope, MetricsProvider, Notifier, Objects, Router

ROUTERS: Final = "canaryctl.routers"
METRICS: Final = "canaryctl.metrics"
NOTIFIERS: Final = "canaryctl.notifiers"

_WHAT = {ROUTERS: "provider", METRICS: "metric provider type", NOTIFIERS: "alert provider type"}


class UnknownPlugin(ValueError):
    """No installed distribution registers this name; the message lists the names that are."""


@cache
def _registered(group: str) -> dict[str, EntryPoint]:
    # The first registration of a name wins, as in sys.path order, so a copy later on the path cannot
    # replace a provider that is already there.
    from importlib.metadata import entry_points  # imported on first use: the CLI starts without it

    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=group):
        found.setdefault(entry.name, entry)
    return found


def names(group: str) -> tuple[str, ...]:
    """Every name registered in ``group``, sorted."""
    return tuple(sorted(_registered(group)))


def check(group: str, name: str) -> str:
    """``name`` itself when something registers it, else UnknownPlugin (for validators). Where nothing
    at all is registered in ``group`` (the plugin installed alone), names cannot be judged and pass."""
    registered = _registered(group)
    if registered and name not in registered:
        known = ", ".join(names(group)) or "none installed"
        raise UnknownPlugin(f"{_WHAT[group]} {name!r} is not supported by canaryctl; use one of {known}")
    return name


def load(group: str, name: str) -> Any:
    """The factory registered as ``name`` in ``group``."""
    return _registered(group)[check(group, name)].load()


def rescan() -> None:
    """Forget what was found, after distributions were installed into the running process's path."""
    _registered.cache_clear()


def router(provider: str, objects: Objects) -> Router:
    """The router ``spec.provider`` names, writing through ``objects``."""
    made: Router = load(ROUTERS, provider)(objects, provider)
    return made


def metrics_provider(
    spec: MetricTemplateProvider,
    secret: dict[str, str] | None,
    *,
    interval: str = "1m",
    scope: MetricScope | None = None,
) -> MetricsProvider:
    """The metrics provider of one MetricTemplate; ``interval`` is the look-back of window-based APIs,
    ``scope`` what it acts within (None: no namespace, no cluster)."""
    made: MetricsProvider = load(METRICS, spec.type)(spec, secret, interval=interval, scope=scope)
    return made


def notifier(spec: AlertProviderSpec, secret: dict[str, str] | None) -> Notifier:
    """The notifier of one AlertProvider."""
    made: Notifier = load(NOTIFIERS, str(spec.type))(spec, secret)
    return made
