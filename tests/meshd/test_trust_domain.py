"""meshd's trust domain setting: a DNS name, or a clear error before anything starts. What it changes
(certificates issued, peers expected, sources authorized) is proven with real sidecars in
tests/netns/test_access.py, which runs in a trust domain other than the default."""

from __future__ import annotations

import argparse

import pytest

from canaryctl_mesh.meshd import cli

BAD = ("Mesh.Example.org", "mesh_example.org", "mesh..org", "-mesh.org", "mesh.org-", "a" * 64 + ".org", "")


def parser() -> argparse.ArgumentParser:
    made = argparse.ArgumentParser(prog="canaryctl")
    cli.add_parser(made.add_subparsers(dest="command", required=True))
    return made


def test_the_trust_domain_defaults_to_cluster_local_and_takes_a_dns_name() -> None:
    assert parser().parse_args(["meshd", "control-plane"]).trust_domain == "cluster.local"
    chosen = ["meshd", "control-plane", "--trust-domain", "mesh.example-1.org"]
    assert parser().parse_args(chosen).trust_domain == "mesh.example-1.org"


@pytest.mark.parametrize("bad", BAD)
def test_a_trust_domain_that_is_not_a_dns_name_is_refused(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["meshd", "control-plane", f"--trust-domain={bad}"])
    assert f"--trust-domain: trust domain {bad!r} is not a DNS name" in capsys.readouterr().err
