"""Who may ask for what: the policy's rules, checked, and the decision for one peer (no I/O of its own).

A policy is a list of rules. Each rule matches peers by ``uid``, ``unit`` (a glob on the
systemd unit) and ``exe`` (an exact path), and allows ``credentials`` (globs) and ``methods``
(``get``, ``sign``, ``watch``, ``status``, and for other uids ``lock`` and ``admin``). The
first rule that matches a peer decides: what it allows is allowed, everything else is refused.
A rule without ``uid`` matches the daemon's own uid only, so that no rule reaches another user
unless it names that uid. With no rules at all, the daemon's own uid may do everything (as
ssh-agent does) and any other uid nothing.

The policy is stored sealed in the vault as ``{"rules": [...]}`` (lists, strings and ints,
for msgpack) and written by operators as TOML ``[[rule]]`` tables.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Protocol

__all__ = ["METHODS", "Access", "Decision", "Identity", "Policy", "PolicyError", "Rule", "Who"]

#: What a rule may allow, in the order shown. ``lock`` (``vault.lock``) and ``admin`` (the
#: passphrase methods) are asked of other uids only: the daemon's own uid always has them.
METHODS = ("get", "sign", "watch", "status", "lock", "admin")
#: Methods that act on a credential (``status`` does not).
_ON_CREDENTIALS = frozenset({"get", "sign", "watch"})
#: Methods the daemon's own uid always has (the emergency brake; the passphrase governs the rest).
_OWNER_ALWAYS = frozenset({"lock", "admin"})
_KEYS = ("uid", "unit", "exe", "credentials", "methods")
MAX_RULES = 256
_MAX_GLOBS = 256
_MAX_UID = 2**32 - 2  # (uid_t)-1 means "no uid"
#: Decisions one connection keeps (per method and credential name) before it stops caching.
_CACHE_MAX = 1024
_ANY_OF_OWN_UID = "any process of the daemon's uid"
_RULE_HEADER = re.compile(r"^\s*\[\[\s*rule\s*\]\]")


class PolicyError(ValueError):
    """A policy that cannot be used; the message names the rule (from 1) and the key."""

    def __init__(self, message: str, rule: int | None = None) -> None:
        super().__init__(message if rule is None else f"rule {rule}: {message}")
        self.rule = rule
        self.detail = message


class Who(Protocol):
    """What a rule looks at: :class:`vaultd._peer.Peer` has these, and so has :class:`Identity`."""

    @property
    def uid(self) -> int: ...
    @property
    def unit(self) -> str | None: ...
    @property
    def exe(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Identity:
    """A peer described by hand (``vaultctl policy test``)."""

    uid: int
    unit: str | None = None
    exe: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """Allowed or not; the rule that decided (numbered from 1; None for a default); why, in one line."""

    allowed: bool
    rule: int | None
    why: str


@dataclass(frozen=True, slots=True)
class Rule:
    number: int
    credentials: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    uid: int | None = None
    unit: str | None = None
    exe: str | None = None

    def matches(self, who: Who, own_uid: int) -> bool:
        if who.uid != (own_uid if self.uid is None else self.uid):
            return False
        if self.unit is not None and (who.unit is None or not fnmatchcase(who.unit, self.unit)):
            return False
        return self.exe is None or who.exe == self.exe

    def glob_for(self, credential: str) -> str | None:
        """The first of this rule's globs that matches ``credential``."""
        return next((glob for glob in self.credentials if fnmatchcase(credential, glob)), None)

    @property
    def label(self) -> str:
        """``rule 2 (unit engine-a.service)``: the number and what it matches."""
        matchers = (("uid", self.uid), ("unit", self.unit), ("exe", self.exe))
        shown = ", ".join(f"{key} {value}" for key, value in matchers if value is not None)
        return f"rule {self.number} ({shown or _ANY_OF_OWN_UID})"

    def judge(self, method: str, credential: str | None) -> Decision:
        if method not in self.methods:
            return Decision(False, self.number, f"{self.label} does not allow {method}")
        if method not in _ON_CREDENTIALS:
            return Decision(True, self.number, f"{self.label} allows {method}")
        glob = None if credential is None else self.glob_for(credential)
        if glob is None:
            allowed = ", ".join(self.credentials) or "none"
            return Decision(
                False, self.number, f"{self.label} does not allow {credential!r} (its credentials: {allowed})"
            )
        return Decision(True, self.number, f"{self.label} allows {method} on {glob}")

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("uid", "unit", "exe"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out["credentials"] = list(self.credentials)
        out["methods"] = list(self.methods)
        return out


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    #: Set when a stored policy could not be read: it then refuses everything, saying why.
    broken: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Policy:
        """From the stored form ``{"rules": [ {...}, ... ]}``.

        Raises:
            PolicyError: an unknown key, a wrong type, an unknown method, an empty rule.
        """
        if not isinstance(config, Mapping):
            raise PolicyError("the policy must be a map {'rules': [...]}")
        for key in config:
            if key != "rules":
                raise PolicyError(f"unknown key {_shown(key)} (a policy holds 'rules' only)")
        rules = config.get("rules", [])
        if not isinstance(rules, list):
            raise PolicyError("'rules' must be a list of rules")
        return cls._of(rules)

    @classmethod
    def from_toml(cls, text: str) -> Policy:
        """From a TOML document of ``[[rule]]`` tables.

        Raises:
            PolicyError: not TOML (the message gives the line and column), or as :meth:`from_config`;
                a rule's error also names the line of its ``[[rule]]`` header when it can be found.
        """
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"not valid TOML: {exc}") from None
        for key in document:
            if key != "rule":
                raise PolicyError(f"unknown key {_shown(key)} at the top (a policy file holds [[rule]] tables)")
        rules = document.get("rule", [])
        if not isinstance(rules, list):
            raise PolicyError("'rule' must be an array of tables: write each rule as [[rule]]")
        try:
            return cls._of(rules)
        except PolicyError as exc:
            headers = [n for n, line in enumerate(text.splitlines(), 1) if _RULE_HEADER.match(line)]
            if exc.rule is None or len(headers) != len(rules):
                raise
            raise PolicyError(f"rule {exc.rule} (line {headers[exc.rule - 1]}): {exc.detail}") from None

    @classmethod
    def _of(cls, rules: Sequence[Any]) -> Policy:
        if len(rules) > MAX_RULES:
            raise PolicyError(f"{len(rules)} rules: at most {MAX_RULES}")
        return cls(tuple(_rule(number, table) for number, table in enumerate(rules, 1)))

    def to_config(self) -> dict[str, Any]:
        return {"rules": [rule.to_config() for rule in self.rules]}

    def to_toml(self) -> str:
        """The rules as a TOML document, each numbered in a comment (``from_toml`` reads it back)."""
        if not self.rules:
            return (
                "# no rules: processes of the daemon's own uid may use every credential and method;\n"
                "# processes of any other uid may not connect\n"
            )
        blocks = []
        for rule in self.rules:
            lines = [f"# rule {rule.number}", "[[rule]]"]
            lines += [f"{key} = {_toml(value)}" for key, value in rule.to_config().items()]
            blocks.append("\n".join(lines) + "\n")
        return "\n".join(blocks)

    def match(self, who: Who, *, own_uid: int) -> Rule | None:
        """The first rule that matches ``who``, if any."""
        return next((rule for rule in self.rules if rule.matches(who, own_uid)), None)

    def decide(self, who: Who, credential: str | None, method: str, *, own_uid: int) -> Decision:
        """May ``who`` call ``method`` (one of :data:`METHODS`) on ``credential`` (None for ``status``)?"""
        return self.judge(self.match(who, own_uid=own_uid), who, credential, method, own_uid=own_uid)

    def judge(self, rule: Rule | None, who: Who, credential: str | None, method: str, *, own_uid: int) -> Decision:
        """As :meth:`decide`, ``rule`` being what :meth:`match` found for ``who`` (cached by a connection)."""
        if method not in METHODS:
            raise ValueError(f"not a policy method: {method!r}")
        if method in _OWNER_ALWAYS and who.uid == own_uid and (self.rules or self.broken is not None):
            return Decision(True, None, f"the daemon's own uid: {method} is never governed by rules")
        if self.broken is not None:
            return Decision(False, None, f"the stored policy cannot be read ({self.broken}): everything is refused")
        if rule is not None:
            return rule.judge(method, credential)
        if self.rules:
            return Decision(False, None, f"no rule matches {_describe(who)}")
        if who.uid == own_uid:
            return Decision(True, None, "default: the daemon's own uid, no rules")
        return Decision(False, None, f"default: uid {who.uid} is not the daemon's, and there are no rules")


class Access:
    """One connection's standing under one policy: its rule, found once, and its decisions cached.

    ``policy`` None means the policy is unknown (the vault is locked, its policy sealed): the
    daemon's own uid may then do everything (reader methods answer LOCKED on their own) and
    another uid nothing. ``source`` is what the policy was read from: the dispatcher compares
    it by identity to know when to build a new Access.

    When the rule found has an ``exe``, each decision first asks the peer whether it still runs
    that exe (``who.exe_holds()``, where ``who`` has it: :class:`vaultd._peer.Peer`); once it
    does not (an exec, or the process's exit, since it connected), the peer's exe is unknown for
    good and the first rule that matches without it decides, the reason saying why. Connections
    under other rules pay nothing for it.
    """

    __slots__ = (
        "_all",
        "_cache",
        "_denied",
        "_exe_holds",
        "_lost",
        "_own",
        "_policy",
        "_rule",
        "_who",
        "sealed",
        "source",
    )

    def __init__(self, policy: Policy | None, who: Who, own_uid: int, source: object = None) -> None:
        self.source = source
        self.sealed = policy is None
        self._policy = policy or Policy()
        self._who = who
        self._own = own_uid
        self._rule = None if policy is None else policy.match(who, own_uid=own_uid)
        #: Asked before each decision of an ``exe`` rule: does the process still run that exe?
        self._exe_holds: Callable[[], bool] | None = None
        if self._rule is not None and self._rule.exe is not None:
            self._exe_holds = getattr(who, "exe_holds", None)
        self._lost = ""
        self._cache: dict[tuple[str, str | None], Decision] = {}
        self._denied: set[tuple[str, str | None]] = set()
        self._all: Decision | None = None
        if policy is None:
            if who.uid == own_uid:
                self._all = Decision(True, None, "the vault is locked (its policy is sealed): the daemon's own uid")
        elif not policy.rules and policy.broken is None and who.uid == own_uid:
            self._all = Decision(True, None, "default: the daemon's own uid, no rules")

    def check(self, method: str, credential: str | None) -> Decision:
        """The decision for ``method`` (one of :data:`METHODS`) on ``credential``."""
        if self._all is not None:
            return self._all
        if self._exe_holds is not None and not self._exe_holds():
            self._lose_exe()
        key = (method, credential)
        decision = self._cache.get(key)
        if decision is None:
            if self.sealed:
                decision = Decision(False, None, "the vault is locked: the policy is sealed in it")
            else:
                decision = self._policy.judge(self._rule, self._who, credential, method, own_uid=self._own)
                if self._lost:
                    decision = Decision(decision.allowed, decision.rule, f"{decision.why} ({self._lost})")
            if len(self._cache) < _CACHE_MAX:
                self._cache[key] = decision
        return decision

    def _lose_exe(self) -> None:
        """The process that connected has exec'd or exited: from now on its ``exe`` is unknown,
        as if it had never been read, and the first rule that matches without it decides."""
        who = self._who
        self._lost = f"its exe {who.exe} no longer holds: the process that connected has exec'd or exited since"
        self._who = Identity(who.uid, who.unit, None)
        self._rule = self._policy.match(self._who, own_uid=self._own)
        self._exe_holds = None
        self._cache.clear()

    def first_denial(self, method: str, credential: str | None) -> bool:
        """True the first time this connection is refused ``method`` on ``credential`` (to log it once)."""
        key = (method, credential)
        if key in self._denied or len(self._denied) >= _CACHE_MAX:
            return False
        self._denied.add(key)
        return True

    def shows(self, credential: str) -> bool:
        """Whether ``status`` shows this credential: every one by default, else its rule's globs."""
        if self._all is not None:
            return True
        if self._exe_holds is not None and not self._exe_holds():
            self._lose_exe()
        return self._rule is not None and self._rule.glob_for(credential) is not None


# -- checking one rule -----------------------------------------------------------------------------


def _rule(number: int, table: Any) -> Rule:
    if not isinstance(table, Mapping):
        raise PolicyError("must be a table of uid, unit, exe, credentials, methods", number)
    if not table:
        raise PolicyError("is empty: give 'methods' and 'credentials', and what it matches (uid, unit, exe)", number)
    for key in table:
        if key not in _KEYS:
            raise PolicyError(f"unknown key {_shown(key)} (known: {', '.join(_KEYS)})", number)
    uid, unit, exe = table.get("uid"), table.get("unit"), table.get("exe")
    if uid is not None and (not isinstance(uid, int) or isinstance(uid, bool) or not 0 <= uid <= _MAX_UID):
        raise PolicyError(f"'uid' must be an integer from 0 to {_MAX_UID}", number)
    if unit is not None and not _text(unit, 256, "/"):
        raise PolicyError("'unit' must be a unit name or glob, e.g. \"engine-*.service\"", number)
    if exe is not None and not (_text(exe, 4096, "") and exe.startswith("/")):
        raise PolicyError("'exe' must be an absolute path, e.g. \"/usr/bin/python3.11\"", number)
    if "methods" not in table:
        raise PolicyError(f"'methods' is missing (a list of: {', '.join(METHODS)})", number)
    methods = _strings(table["methods"], "methods", number, len(METHODS) * 4)
    for method in methods:
        if method not in METHODS:
            raise PolicyError(f"unknown method {_shown(method)} in 'methods' (known: {', '.join(METHODS)})", number)
    credentials = _strings(table.get("credentials", []), "credentials", number, _MAX_GLOBS)
    for glob in credentials:
        if not _text(glob, 128, "/"):
            raise PolicyError("'credentials' holds an empty or invalid name or glob", number)
    if "credentials" not in table and _ON_CREDENTIALS.intersection(methods):
        raise PolicyError("'credentials' is missing: the names or globs its methods apply to", number)
    return Rule(
        number,
        credentials=tuple(dict.fromkeys(credentials)),
        methods=tuple(m for m in METHODS if m in methods),
        uid=uid,
        unit=unit,
        exe=exe,
    )


def _strings(value: Any, key: str, number: int, most: int) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PolicyError(f"'{key}' must be a list of strings", number)
    if len(value) > most:
        raise PolicyError(f"'{key}' holds {len(value)} entries: at most {most}", number)
    return value


def _text(value: Any, most: int, forbidden: str) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= most
        and value.isprintable()
        and not any(char in value for char in forbidden)
    )


def _shown(key: Any) -> str:
    return repr(key) if isinstance(key, str) and len(key) <= 64 and key.isprintable() else "(unprintable)"


def _describe(who: Who) -> str:
    parts = [f"uid {who.uid}"]
    if who.unit is not None:
        parts.append(f"unit {who.unit}")
    if who.exe is not None:
        parts.append(f"exe {who.exe}")
    return ", ".join(parts)


def _toml(value: Any) -> str:
    """A TOML value: an int, a basic string (JSON's escapes are TOML's), or an array of strings."""
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)
