"""``vaultctl completion SHELL``: tab completion for bash, zsh and fish, made from vaultctl's own parser.

The scripts are generated from the argparse tree at the time they are printed, so a new command
or flag completes without anyone editing a script. Credential names complete too: the script asks
``vaultctl completion --names``, which prints the names ``status`` shows (nothing when the daemon
is down or locked, and never a secret: names are not secret).
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vaultd_client import Client
from vaultd_client.errors import RemoteError, TransportError

from .common import EXIT_OK, EXIT_USAGE, CtlError

SHELLS = ("bash", "zsh", "fish")
#: Positional arguments that hold credential names.
_NAME_DESTS = {"name", "names"}


@dataclass
class Command:
    """One command (or action of a command) as completion sees it."""

    help: str = ""
    #: Every option string, with whether it takes a value and the values it accepts.
    options: dict[str, tuple[bool, list[str]]] = field(default_factory=dict)
    #: Sub-actions (``policy show``), by name.
    actions: dict[str, Command] = field(default_factory=dict)
    #: Whether a positional argument is a credential name.
    takes_name: bool = False
    #: The fixed values a positional argument accepts (``completion SHELL``).
    words: list[str] = field(default_factory=list)


def command_tree(parser: argparse.ArgumentParser, help: str = "") -> Command:
    """What ``parser`` accepts: its options and, recursively, its subcommands."""
    node = Command(help=help)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                node.actions[name] = command_tree(sub, helps.get(name, ""))
        elif action.option_strings:
            if action.help == argparse.SUPPRESS:
                continue
            choices = [str(c) for c in action.choices] if action.choices else []
            for option in action.option_strings:
                node.options[option] = (action.nargs != 0, choices)
        elif action.dest in _NAME_DESTS:
            node.takes_name = True
        elif action.choices:
            node.words += [str(c) for c in action.choices]
    return node


def _words(items: Any) -> str:
    return " ".join(shlex.quote(str(item)) for item in items)


def bash_script(tree: Command) -> str:
    """A bash completion function (zsh loads it through ``bashcompinit``)."""
    valued = sorted(o for o, (takes, _) in tree.options.items() if takes)
    cases = []
    for name, command in sorted(tree.actions.items()):
        cases.append(f"        {shlex.quote(name)}) {_bash_command(command)} ;;")
    return f"""# vaultctl completion for bash: eval "$(vaultctl completion bash)" (in ~/.bashrc)
_vaultctl_names() {{ vaultctl --timeout 1 completion --names 2>/dev/null; }}
_vaultctl() {{
    [[ -n ${{ZSH_VERSION-}} ]] && setopt localoptions ksharrays  # bash's 0-based COMP_WORDS under zsh
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local cmd="" action="" i w skip=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${{COMP_WORDS[i]}}
        if ((skip)); then skip=0; continue; fi
        case "$w" in
            {"|".join(valued) or "--never"}) [[ -z $cmd ]] && skip=1; continue ;;
            -*) continue ;;
        esac
        if [[ -z $cmd ]]; then cmd=$w; elif [[ -z $action ]]; then action=$w; fi
    done
    local words="" names=0 values=""
    case "$cmd" in
        "") words={shlex.quote(" ".join([*sorted(tree.actions), *sorted(tree.options)]))} ;;
{chr(10).join(cases)}
    esac
    if [[ -n $values ]]; then
        COMPREPLY=($(compgen -W "$values" -- "$cur"))
    elif [[ $cur != -* ]] && ((names)); then
        COMPREPLY=($(compgen -W "$words $(_vaultctl_names)" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
    fi
}}
complete -o default -F _vaultctl vaultctl
"""


def _bash_values(command: Command) -> str:
    """``case "$prev"`` lines giving the accepted values of an option that has a fixed set."""
    lines = [f"{o}) values={shlex.quote(' '.join(c))} ;;" for o, (_, c) in sorted(command.options.items()) if c]
    if not lines:
        return ""
    return f'case "$prev" in {" ".join(lines)} esac; '


def _bash_command(command: Command) -> str:
    if command.actions:
        inner = " ".join(
            f"{shlex.quote(name)}) {_bash_leaf(action)} ;;" for name, action in sorted(command.actions.items())
        )
        first = shlex.quote(" ".join(sorted(command.actions)))
        return f'if [[ -z $action ]]; then words={first}; else case "$action" in {inner} esac; fi'
    return _bash_leaf(command)


def _bash_leaf(command: Command) -> str:
    words = shlex.quote(" ".join([*command.words, *sorted(command.options)]))
    return f"{_bash_values(command)}words={words}; names={int(command.takes_name)}"


def zsh_script(tree: Command) -> str:
    """zsh runs the bash function through its own ``bashcompinit`` emulation."""
    return (
        '# vaultctl completion for zsh: eval "$(vaultctl completion zsh)" (in ~/.zshrc, after compinit)\n'
        "autoload -U +X bashcompinit && bashcompinit\n" + bash_script(tree)
    )


def fish_script(tree: Command) -> str:
    """``complete`` lines for fish, one per command, action and option."""
    lines = [
        "# vaultctl completion for fish: vaultctl completion fish > ~/.config/fish/completions/vaultctl.fish",
        "complete -c vaultctl -f",
        "function __vaultctl_names; vaultctl --timeout 1 completion --names 2>/dev/null; end",
    ]
    for option, (takes, choices) in sorted(tree.options.items()):
        lines.append(f"complete -c vaultctl -n '__fish_use_subcommand' {_fish_option(option, takes, choices)}")
    for name, command in sorted(tree.actions.items()):
        lines.append(f"complete -c vaultctl -n '__fish_use_subcommand' -a {name} -d {_fish_text(command.help)}")
        seen = f"__fish_seen_subcommand_from {name}"
        lines += _fish_leaf(seen, command)
        if command.actions:
            actions = " ".join(sorted(command.actions))
            for action_name, action in sorted(command.actions.items()):
                lines.append(
                    f"complete -c vaultctl -n '{seen}; and not __fish_seen_subcommand_from {actions}' "
                    f"-a {action_name} -d {_fish_text(action.help)}"
                )
                lines += _fish_leaf(f"{seen}; and __fish_seen_subcommand_from {action_name}", action)
    return "\n".join(lines) + "\n"


def _fish_leaf(condition: str, command: Command) -> list[str]:
    lines = [
        f"complete -c vaultctl -n '{condition}' {_fish_option(option, takes, choices)}"
        for option, (takes, choices) in sorted(command.options.items())
    ]
    if command.takes_name:
        lines.append(f"complete -c vaultctl -n '{condition}' -a '(__vaultctl_names)'")
    if command.words:
        lines.append(f"complete -c vaultctl -n '{condition}' -a {shlex.quote(' '.join(command.words))}")
    return lines


def _fish_option(option: str, takes: bool, choices: list[str]) -> str:
    flag = f"-l {option[2:]}" if option.startswith("--") else f"-s {option[1:]}"
    if choices:
        return f"{flag} -x -a {shlex.quote(' '.join(choices))}"
    return f"{flag} -r -F" if takes else flag


def _fish_text(text: str) -> str:
    return shlex.quote(text.split(":", maxsplit=1)[0].split("(", maxsplit=1)[0].strip()[:60])


_SCRIPTS: dict[str, Callable[[Command], str]] = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}


def add_completion_parser(sub: Any) -> None:
    p = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, fish)",
        description="Print the completion script for SHELL. Commands, flags, flag values and credential names "
        "complete. bash: add 'eval \"$(vaultctl completion bash)\"' to ~/.bashrc; zsh: the same with zsh, in "
        "~/.zshrc after compinit; fish: vaultctl completion fish > ~/.config/fish/completions/vaultctl.fish",
    )
    p.add_argument("shell", nargs="?", choices=SHELLS, help="the shell to complete for")
    p.add_argument("--names", action="store_true", help=argparse.SUPPRESS)  # what the scripts call


def cmd_completion(client: Client, args: argparse.Namespace) -> int:
    if args.names:
        try:
            status = client.status()
        except (RemoteError, TransportError):
            return EXIT_OK  # nothing to offer: the shell completes files instead
        for credential in status.get("credentials") or []:
            print(credential["name"])
        return EXIT_OK
    if args.shell is None:
        raise CtlError(f"name a shell: vaultctl completion {{{','.join(SHELLS)}}}", EXIT_USAGE)
    from .main import build_parser  # noqa: PLC0415 - main imports this module

    print(_SCRIPTS[args.shell](command_tree(build_parser())), end="")
    return EXIT_OK


COMPLETION_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {"completion": cmd_completion}
