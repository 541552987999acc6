"""``vaultctl completion SHELL``: tab completion for bash, zsh and fish, made from vaultctl's own parser.

The scripts are generated from the argparse tree at the time they are printed, so a new command
or flag completes without anyone editing a script. Credential names complete too: the script asks
``vaultctl completion --names``, which prints the names ``status`` shows (nothing when the daemon
is down or locked, and never a secret: names are not secret). Names are the daemon's text, so
they are never code: ``--names`` prints only those that follow the name rule (ASCII letters,
digits, '.', '_', '-'), and the scripts check that rule again and match names with a pattern
loop, never through ``compgen -W`` (which would expand ``$(...)`` in a name). Arguments that
take a path (metavar FILE or PATH, or a dest ending in file or path) complete file names; other
values (a descriptor, a number) complete nothing.
"""

from __future__ import annotations

import argparse
import re
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
#: The daemon's credential name rule (vaultd/_credentials.py NAME_PATTERN; a test checks the two agree).
NAME_RULE = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_NAME = re.compile(NAME_RULE)
#: Values that are file names: by metavar, or by dest.
_PATH_METAVARS = {"FILE", "PATH"}


def _takes_path(action: argparse.Action) -> bool:
    dest = action.dest.lower()
    return action.metavar in _PATH_METAVARS or dest.endswith(("file", "path"))


@dataclass
class Command:
    """One command (or action of a command) as completion sees it."""

    help: str = ""
    #: Every option string, with whether it takes a value and the values it accepts.
    options: dict[str, tuple[bool, list[str]]] = field(default_factory=dict)
    #: The options whose value is a file name.
    path_options: set[str] = field(default_factory=set)
    #: Sub-actions (``policy show``), by name.
    actions: dict[str, Command] = field(default_factory=dict)
    #: Whether a positional argument is a credential name.
    takes_name: bool = False
    #: The fixed values a positional argument accepts (``completion SHELL``).
    words: list[str] = field(default_factory=list)
    #: Whether a positional argument is a file name (``restore FILE``).
    takes_path: bool = False


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
                if action.nargs != 0 and not choices and _takes_path(action):
                    node.path_options.add(option)
        elif action.dest in _NAME_DESTS:
            node.takes_name = True
        elif action.choices:
            node.words += [str(c) for c in action.choices]
        elif _takes_path(action):
            node.takes_path = True
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
    local words="" names=0 values="" value="" paths=0
    case "$cmd" in
        "") {_bash_prev(tree)}words={shlex.quote(" ".join([*sorted(tree.actions), *sorted(tree.options)]))} ;;
{chr(10).join(cases)}
    esac
    COMPREPLY=()
    if [[ -n $values ]]; then
        COMPREPLY=($(compgen -W "$values" -- "$cur"))
    elif [[ $value == path || ( -z $value && $cur != -* && $paths == 1 ) ]]; then
        return 0  # no match: complete -o default completes file names
    elif [[ -n $value ]]; then
        compopt +o default 2>/dev/null  # a number or a word of the user's: nothing to offer
        return 0
    else
        # Only vaultctl's own words go through compgen -W (it expands what it is given); names are
        # the daemon's text: kept only when they follow the name rule, matched with a pattern.
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
        if [[ $cur != -* ]] && ((names)); then
            local name rule={shlex.quote("^" + NAME_RULE + "$")}
            while IFS= read -r name; do
                [[ $name =~ $rule && $name == "$cur"* ]] && COMPREPLY+=("$name")
            done < <(_vaultctl_names)
        fi
    fi
}}
complete -o default -F _vaultctl vaultctl
"""


def _bash_prev(command: Command) -> str:
    """``case "$prev"`` giving what the word after an option is: a fixed set, a path, or a value of its own."""
    lines = []
    for option, (takes, choices) in sorted(command.options.items()):
        if choices:
            lines.append(f"{option}) values={shlex.quote(' '.join(choices))} ;;")
        elif option in command.path_options:
            lines.append(f"{option}) value=path ;;")
        elif takes:
            lines.append(f"{option}) value=other ;;")
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
    return f"{_bash_prev(command)}words={words}; names={int(command.takes_name)}; paths={int(command.takes_path)}"


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
        # names are the daemon's text: only those that follow the name rule are offered
        "function __vaultctl_names; vaultctl --timeout 1 completion --names 2>/dev/null"
        f" | string match -r -- {shlex.quote('^' + NAME_RULE + '$')}; end",
    ]
    for option, (takes, choices) in sorted(tree.options.items()):
        flags = _fish_option(option, takes, choices, option in tree.path_options)
        lines.append(f"complete -c vaultctl -n '__fish_use_subcommand' {flags}")
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
        f"complete -c vaultctl -n '{condition}' {_fish_option(option, takes, choices, option in command.path_options)}"
        for option, (takes, choices) in sorted(command.options.items())
    ]
    if command.takes_path:
        lines.append(f"complete -c vaultctl -n '{condition}' -F")
    if command.takes_name:
        lines.append(f"complete -c vaultctl -n '{condition}' -a '(__vaultctl_names)'")
    if command.words:
        lines.append(f"complete -c vaultctl -n '{condition}' -a {shlex.quote(' '.join(command.words))}")
    return lines


def _fish_option(option: str, takes: bool, choices: list[str], path: bool) -> str:
    """A path value completes file names (``-r -F``); any other value nothing but its choices (``-x``)."""
    flag = f"-l {option[2:]}" if option.startswith("--") else f"-s {option[1:]}"
    if choices:
        return f"{flag} -x -a {shlex.quote(' '.join(choices))}"
    if path:
        return f"{flag} -r -F"
    return f"{flag} -x" if takes else flag


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
            name = credential.get("name") if isinstance(credential, dict) else None
            if isinstance(name, str) and _NAME.fullmatch(name):  # a name is never code nor an escape
                print(name)
        return EXIT_OK
    if args.shell is None:
        raise CtlError(f"name a shell: vaultctl completion {{{','.join(SHELLS)}}}", EXIT_USAGE)
    from .main import build_parser  # noqa: PLC0415 - main imports this module

    print(_SCRIPTS[args.shell](command_tree(build_parser())), end="")
    return EXIT_OK


COMPLETION_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {"completion": cmd_completion}
