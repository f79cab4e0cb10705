"""``kubectl canary completion bash|zsh``: a shell completion script generated from the parser itself,
so it never lists a sub-command or flag that does not exist. Commands that take a Canary NAME complete
names with ``kubectl get canaries`` (honouring ``-n``). zsh loads the bash script through bashcompinit.
"""

from __future__ import annotations

import argparse

from canaryctl.cli.kube import Subparsers

SHELLS = ("bash", "zsh")
PROGRAMS = "kubectl-canary canaryctl"

BASH_TEMPLATE = """\
# bash completion for kubectl-canary and canaryctl: source <(kubectl canary completion bash)
_kubectl_canary_names() {{
    local ns=() i
    for ((i = 1; i < ${{#COMP_WORDS[@]}} - 1; i++)); do
        case "${{COMP_WORDS[i]}}" in -n|--namespace) ns=(-n "${{COMP_WORDS[i+1]}}") ;; esac
    done
    kubectl get canaries.canaryctl.dev "${{ns[@]}}" -o jsonpath='{{.items[*].metadata.name}}' 2>/dev/null
}}

_kubectl_canary() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" command="${{COMP_WORDS[1]}}" opts=""
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "{commands}" -- "$cur"))
        return
    fi
    case "$command" in
{options}
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    elif [[ " {named} " == *" $command "* ]]; then
        COMPREPLY=($(compgen -W "$(_kubectl_canary_names)" -- "$cur"))
    elif [[ "$command" == completion ]]; then
        COMPREPLY=($(compgen -W "{shells}" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -F _kubectl_canary {programs}
"""

ZSH_PREFIX = """\
#compdef kubectl-canary canaryctl
# zsh completion: source <(kubectl canary completion zsh)
autoload -U +X bashcompinit && bashcompinit
"""


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script: source <(kubectl canary completion bash)",
    )
    parser.add_argument("shell", choices=SHELLS)
    parser.set_defaults(func=run, commands=subparsers)


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [
        flag
        for action in parser._actions
        if action.help is not argparse.SUPPRESS
        for flag in action.option_strings
        if flag.startswith("--") or len(flag) == 2
    ]


def _takes_name(parser: argparse.ArgumentParser) -> bool:
    return any(action.dest == "name" and not action.option_strings for action in parser._actions)


def script(shell: str, commands: Subparsers) -> str:
    parsers = commands.choices
    options = "\n".join(f'        {name}) opts="{" ".join(_flags(p))}" ;;' for name, p in parsers.items())
    bash = BASH_TEMPLATE.format(
        commands=" ".join(parsers),
        options=options,
        named=" ".join(name for name, p in parsers.items() if _takes_name(p)),
        shells=" ".join(SHELLS),
        programs=PROGRAMS,
    )
    return bash if shell == "bash" else ZSH_PREFIX + bash


def run(args: argparse.Namespace) -> int:
    print(script(args.shell, args.commands), end="")
    return 0
