"""Shell completion through argcomplete: the completions come from the parser itself, so they never list a
sub-command or flag that does not exist, and a Canary NAME completes with the names in the cluster.

- ``kubectl canary completion bash|zsh|fish`` prints argcomplete's script for ``kubectl-canary`` and
  ``canaryctl``; on TAB the shell runs the program with ``_ARGCOMPLETE`` set and ``main`` answers here.
- ``kubectl_complete-canary`` is what kubectl (1.26+) runs for ``kubectl canary <TAB>``: the words after
  ``canary`` as arguments, the completions one per line and Cobra's directive last.

A TAB imports only the module of the sub-command being typed, like the command itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import argcomplete
from argcomplete.completers import BaseCompleter
from argcomplete.finders import CompletionFinder
from argcomplete.shell_integration import shellcode

if TYPE_CHECKING:
    from canaryctl.cli.kube import Subparsers

SHELLS = ("bash", "zsh", "fish")
PROGRAMS = ("kubectl-canary", "canaryctl")
NO_FILE_COMPLETION = 4  # Cobra's ShellCompDirectiveNoFileComp
FILE_COMPLETION = 0  # ShellCompDirectiveDefault: the shell completes file names
NAME_LIST_TIMEOUT_SECONDS = 5.0


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script: source <(kubectl canary completion bash); "
        "for fish: kubectl canary completion fish | source. kubectl itself completes "
        "`kubectl canary` through the kubectl_complete-canary executable installed with canaryctl.",
    )
    parser.add_argument("shell", choices=SHELLS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(shellcode(list(PROGRAMS), shell=args.shell), end="")
    return 0


def canary_names(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Canaries in the namespace the command line names so far (``-n``, ``--context``, ...)."""
    from canaryctl.cli.kube import CommandError, connect, namespace_of
    from canaryctl.cli.view import list_canaries

    async def names() -> list[str]:
        with connect(parsed_args) as objects:
            found = await list_canaries(objects, namespace_of(parsed_args))
        return [str(obj["metadata"]["name"]) for obj in found]

    defaults = {"namespace": None, "kubeconfig": None, "context": None, "server": None}
    for key, value in defaults.items():
        if not hasattr(parsed_args, key):
            setattr(parsed_args, key, value)
    try:
        found = asyncio.run(asyncio.wait_for(names(), NAME_LIST_TIMEOUT_SECONDS))
    except (CommandError, TimeoutError):
        return []
    return sorted(name for name in found if name.startswith(prefix))


def completion_parser(prog: str, words: Sequence[str]) -> argparse.ArgumentParser:
    """The parser for completing ``words`` (the command line after the program): the sub-command being
    typed in full, with Canary names on its NAME argument; while the sub-command itself is typed, every
    sub-command by name only."""
    from canaryctl.cli.main import COMMANDS, build_parser, command_named

    command = words[0] if len(words) > 1 else None
    if command_named(command) is not None:
        parser = build_parser(prog, command)
    else:
        parser = argparse.ArgumentParser(prog=prog)
        subparsers = parser.add_subparsers(dest="command")
        for name, entry in COMMANDS.items():
            subparsers.add_parser(name, help="", aliases=entry.aliases)
        subparsers.add_parser("version", help="")
        add_parser(subparsers)
    for action in _subcommand_actions(parser):
        if action.dest == "name" and not action.option_strings:
            action.completer = canary_names  # type: ignore[attr-defined]
    return parser


def _subcommand_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _subcommand_actions(sub)
        found.append(action)
    return found


def complete_for_shell(prog: str) -> None:
    """Answers a shell's completion request (``_ARGCOMPLETE`` set); argcomplete exits the process."""
    line = os.environ.get("COMP_LINE", "")[: int(os.environ.get("COMP_POINT") or 0)]
    try:
        words = shlex.split(line)[1:]
    except ValueError:  # an open quote in the word being completed
        words = line.split()[1:]
    if line.endswith(" "):
        words.append("")
    argcomplete.autocomplete(completion_parser(prog, words), always_complete_options=False)


class _Finder(CompletionFinder):
    def complete(self, words: Sequence[str]) -> list[str]:
        """Completions of the last of ``words`` (the command line after the program)."""
        completed: list[str] = self._get_completions(  # type: ignore[no-untyped-call]
            ["canary", *words[:-1]], words[-1], "", None
        )
        return completed


class _NoFiles(BaseCompleter):
    def __call__(self, **_: Any) -> list[str]:
        return []


def kubectl_complete(argv: Sequence[str] | None = None) -> int:
    """``kubectl_complete-canary WORD... PARTIAL``: what kubectl runs to complete ``kubectl canary``."""
    words = list(sys.argv[1:] if argv is None else argv) or [""]
    parser = completion_parser("kubectl canary", words)
    # File arguments get no completions and directive 0: the shell completes paths itself.
    finder = _Finder(parser, always_complete_options=False, append_space=False, default_completer=_NoFiles())
    completions = finder.complete(words)
    for completion in completions:
        print(completion)
    print(f":{NO_FILE_COMPLETION if completions else FILE_COMPLETION}")
    return 0


def main() -> None:
    raise SystemExit(kubectl_complete())
