"""kubectl's habits for ``list`` and ``get``: ``-o wide|name``, ``--no-headers``, ``-l/--selector``
answered by the API server, and ``get`` as another name for ``status``."""

from __future__ import annotations

import kmock
import pytest

from tests.plugin import scenarios
from tests.plugin.helpers import kubectl_canary

pytestmark = pytest.mark.asyncio


def seed_labelled(emulator: kmock.KubernetesEmulator) -> None:
    labels = {
        "podinfo": {"team": "web", "tier": "front"},
        "failing": {"team": "web"},
        "done": {"team": "ops"},
    }
    for make in (scenarios.progressing, scenarios.failed, scenarios.succeeded):
        objs = make()
        objs[0]["metadata"]["labels"] = labels[objs[0]["metadata"]["name"]]
        scenarios.seed(emulator, objs)


async def names(
    emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str], *argv: str
) -> list[str]:
    assert await kubectl_canary(emulator, "list", "-n", "test", "-o", "name", *argv) == 0
    return capsys.readouterr().out.split()


async def test_output_name_prints_resource_slash_name(
    emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_labelled(emulator)
    assert await names(emulator, capsys) == [
        "canary.canaryctl.dev/done",
        "canary.canaryctl.dev/failing",
        "canary.canaryctl.dev/podinfo",
    ]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("team=web", ["failing", "podinfo"]),
        ("team==web,tier=front", ["podinfo"]),
        ("team!=web", ["done"]),
        ("tier", ["podinfo"]),
        ("!tier", ["done", "failing"]),
        ("team in (ops, nobody)", ["done"]),
        ("team notin (ops)", ["failing", "podinfo"]),
    ],
)
async def test_selector_filters_on_the_server(
    emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str], selector: str, expected: list[str]
) -> None:
    seed_labelled(emulator)
    found = await names(emulator, capsys, "-l", selector)
    assert found == [f"canary.canaryctl.dev/{name}" for name in expected]
    listed = [r for r in emulator._requests if r.resource and r.resource.plural == "canaries"]
    assert listed[-1].params.get("labelSelector") == selector, "the API server does the filtering"


async def test_selector_long_flag_and_empty_result(
    emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    seed_labelled(emulator)
    assert await kubectl_canary(emulator, "list", "-n", "test", "--selector", "team=nobody") == 0
    assert capsys.readouterr() == ("", "No canaries found in namespace test.\n")


async def test_wide_adds_provider_strategy_mirror_and_message(
    emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    scenarios.seed(emulator, scenarios.progressing() + scenarios.blue_green())
    assert await kubectl_canary(emulator, "list", "-n", "test", "-o", "wide") == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[-4:] == ["PROVIDER", "STRATEGY", "MIRROR", "MESSAGE"]
    by_name = {row.split()[0]: row for row in rows}
    assert by_name["bluegreen"].split()[7:11] == ["kubernetes", "blue/green", "0%", "Check"]
    assert by_name["podinfo"].split()[7:] == ["default", "canary", "0%", "Check", "0/1", "passed"]


async def test_no_headers(emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    scenarios.seed(emulator, scenarios.progressing())
    assert await kubectl_canary(emulator, "list", "-n", "test", "--no-headers") == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.split()[:3] == ["podinfo", "test", "Progressing"]


async def test_get_is_status(emulator: kmock.KubernetesEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    scenarios.seed(emulator, scenarios.progressing())
    assert await kubectl_canary(emulator, "status", "podinfo", "-n", "test") == 0
    shown = capsys.readouterr().out
    assert await kubectl_canary(emulator, "get", "podinfo", "-n", "test") == 0
    assert capsys.readouterr().out == shown
