"""Alert notifiers, one module per chat service, built from an AlertProvider and its secret."""

from __future__ import annotations

from canaryctl.api.models import AlertProviderSpec, AlertProviderType
from canaryctl.ports import Notifier
from canaryctl_providers.notifiers import discord, gchat, generic, msteams, rocket
from canaryctl_providers.notifiers.routing import AlertRouter, ProviderResolver
from canaryctl_providers.notifiers.slack import SLACK_API_URL, SlackNotifier
from canaryctl_providers.notifiers.webhook import Identity, NotifierError, Renderer, WebhookNotifier

__all__ = ["SECRET_KEYS", "AlertRouter", "NotifierError", "ProviderResolver", "notifier_for"]

# The keys Flagger reads from an AlertProvider's secretRef; each overrides the spec field of that name.
SECRET_KEYS = ("address", "token", "username", "channel", "proxy")

RENDERERS: dict[str, Renderer] = {
    AlertProviderType.MSTEAMS: msteams.render,
    AlertProviderType.DISCORD: discord.render,
    AlertProviderType.ROCKET: rocket.render,
    AlertProviderType.GCHAT: gchat.render,
    AlertProviderType.GENERIC: generic.render,
}


def notifier_for(
    spec: AlertProviderSpec, secret: dict[str, str] | None, *, slack_api_url: str = SLACK_API_URL
) -> Notifier:
    """The notifier for one AlertProvider; raises ValueError when the provider cannot work as written."""
    values = {key: getattr(spec, key, None) for key in SECRET_KEYS}
    values.update({key: value for key, value in (secret or {}).items() if key in SECRET_KEYS and value})
    identity = Identity(channel=values["channel"], username=values["username"])
    if spec.type == AlertProviderType.SLACK:
        return SlackNotifier(
            url=values["address"],
            token=values["token"],
            identity=identity,
            proxy=values["proxy"],
            api_url=slack_api_url,
        )
    if not values["address"]:
        source = f" or key 'address' in secret {spec.secret_ref.name}" if spec.secret_ref else ""
        raise ValueError(f"{spec.type} alert provider needs an address (spec.address{source})")
    return WebhookNotifier(values["address"], RENDERERS[spec.type], identity, values["proxy"])
