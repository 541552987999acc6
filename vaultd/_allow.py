"""What a signing credential may sign: an allow-list of (method, path pattern), and a default deny.

A request is signed only if a rule matches its method and path. Withdrawal and transfer
endpoints of the exchanges vaultd signs for, and those that create or change API keys, are
refused even then, unless the matching
rule names that very path, without a wildcard: ``"POST /*"`` never opens a withdrawal;
``{"method": "POST", "path": "/sapi/v1/capital/withdraw/apply"}`` does, deliberately.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._providers._base import ConfigError

__all__ = ["DEFAULT_ALLOW", "KEY_MANAGEMENT", "MONEY_MOVING", "AllowList", "Rule", "manages_keys", "moves_money"]

_GLOB = set("*?[")

#: Endpoints that move money out (withdrawals, transfers), by exchange. Globs.
MONEY_MOVING: tuple[str, ...] = (
    # Binance
    "/sapi/v1/capital/withdraw/*", "/sapi/v1/asset/transfer", "/sapi/v1/sub-account/*transfer*",
    "/sapi/v1/sub-account/transfer/*", "/sapi/v1/futures/transfer", "/sapi/v1/asset/universalTransfer",
    "/sapi/v1/localentity/withdraw/*", "/sapi/v1/giftcard/*", "/sapi/v1/managed-subaccount/withdraw",
    "/sapi/v1/managed-subaccount/deposit", "/sapi/v*/broker/transfer*", "/sapi/v*/broker/universalTransfer",
    # Kraken
    "/0/private/Withdraw*", "/0/private/WalletTransfer", "/0/private/Transfer*", "/0/private/AccountTransfer",
    # OKX
    "/api/v5/asset/withdrawal*", "/api/v5/asset/transfer", "/api/v5/asset/subaccount/transfer",
    "/api/v5/fiat/create-withdrawal",
    # Bybit
    "/v5/asset/withdraw/*", "/v5/asset/transfer/*",
    # Deribit
    "/api/v2/private/withdraw", "/api/v2/private/submit_transfer_*",
    "/api/v2/private/add_to_address_book", "/api/v2/private/update_in_address_book",
    # Coinbase
    "/v2/accounts/*/transactions", "/v2/accounts/*/withdrawals*", "/api/v3/brokerage/portfolios/move_funds",
    # KuCoin (spot and futures hosts): withdrawals; inner, universal, sub-account and futures transfers
    "/api/v*/withdrawals*", "/api/v*/accounts/*transfer*", "/api/v*/transfer-out", "/api/v*/transfer-in",
    "/api/ua/v*/account/transfer", "/api/v*/broker/nd/transfer",
    # Bitget (v2, and the v1 spot wallet): withdrawals, transfers, sub-account transfers
    "/api/v2/spot/wallet/withdrawal*", "/api/v2/spot/wallet/*transfer*", "/api/v2/spot/wallet/cancel-withdrawal",
    "/api/spot/v1/wallet/withdrawal*", "/api/spot/v1/wallet/*transfer*",
    # Bitget (v3 unified account, copy trading, stocks, brokers)
    "/api/v3/account/*transfer", "/api/v3/account/withdrawal", "/api/v3/copy/futures/transfer",
    "/api/v3/stockplus/asset/transfer", "/api/v3/broker/sub-withdrawal", "/api/v2/broker/account/subaccount-withdrawal",
    "/api/broker/v1/account/sub*-withdrawal", "/api/broker/v1/account/subaccount-transfer",
    # Gate: withdrawals (and UID push), wallet transfers, sub-account transfers
    "/api/v4/withdrawals*", "/api/v4/wallet/transfers", "/api/v4/wallet/sub_account_*transfer*",
    "/api/v4/wallet/sub_account_to_sub_account",
    # Kraken Futures: transfers and withdrawals to Spot, with and without the /derivatives prefix it does not sign
    "/derivatives/api/v3/transfer*", "/derivatives/api/v3/withdrawal*", "/api/v3/transfer*", "/api/v3/withdrawal*",
    # Hyperliquid: every action posts to /exchange; the allow-list judges /exchange/<action type>
    "/exchange/withdraw*", "/exchange/*Send", "/exchange/*Transfer", "/exchange/sendAsset", "/exchange/approve*",
    "/exchange/tokenDelegate", "/exchange/cDeposit", "/exchange/cWithdraw", "/exchange/convertToMultiSigUser",
    "/exchange/multiSig",
    # Hyperliquid L1 actions that spend the account's funds: deploy gas auctions, a vault's first deposit
    "/exchange/*Deploy", "/exchange/createVault",
)  # fmt: skip
#: Endpoints that create, change or re-bind API keys: a key that lifts its own IP binding, or makes
#: a new key, undoes the exchange-side defences SPEC.md section 6.6 tells operators to rely on. Globs.
KEY_MANAGEMENT: tuple[str, ...] = (
    # Binance: sub-account API keys' IP restrictions
    "/sapi/v*/sub-account/subAccountApi/*", "/sapi/v*/broker/subAccountApi*",
    # Bybit
    "/v5/user/update-api", "/v5/user/update-sub-api", "/v5/user/create-sub-api", "/v5/user/delete-api",
    "/v5/user/delete-sub-api",
    # OKX
    "/api/v5/users/subaccount/apikey", "/api/v5/users/subaccount/modify-apikey",
    "/api/v5/users/subaccount/delete-apikey", "/api/v5/broker/nd/subaccount/*apikey",
    # KuCoin
    "/api/v*/sub/api-key", "/api/v*/sub/api-key/*", "/api/v*/broker/nd/account/*apikey",
    # Bitget
    "/api/v2/user/*-apikey", "/api/v2/broker/manage/*-apikey", "/api/v2/broker/manage/*-api-key",
    # Gate
    "/api/v4/sub_accounts/*/keys", "/api/v4/sub_accounts/*/keys/*",
    # Deribit (list_api_keys, a read, stays open)
    "/api/v2/private/*_api_key",
)  # fmt: skip
#: One regex for each list, matched without regard to case (a decision is remembered per path).
_MONEY_MOVING_RE = re.compile("|".join(fnmatch.translate(p) for p in MONEY_MOVING), re.IGNORECASE)
_KEY_MANAGEMENT_RE = re.compile("|".join(fnmatch.translate(p) for p in KEY_MANAGEMENT), re.IGNORECASE)
#: A dot and what follows it in a segment: routers that match ``/transfer.json`` as ``/transfer``
#: (Spring's suffix patterns, Rails' formats) must not let that spelling past the guard.
_SUFFIX = re.compile(r"\.[^/]*")


def moves_money(path: str) -> bool:
    """Whether ``path`` names a withdrawal or transfer endpoint, in any case, with or without
    ``.suffix`` extensions on its segments."""
    return _matches(_MONEY_MOVING_RE, path)


def manages_keys(path: str) -> bool:
    """Whether ``path`` names an endpoint that creates, changes or re-binds API keys (as
    :func:`moves_money`: any case, any ``.suffix``)."""
    return _matches(_KEY_MANAGEMENT_RE, path)


def _matches(pattern: re.Pattern[str], path: str) -> bool:
    if pattern.match(path) is not None:
        return True
    return "." in path and pattern.match(_SUFFIX.sub("", path)) is not None


@dataclass(frozen=True, slots=True)
class Rule:
    method: str  # an upper-case method, or "*"
    path: str  # a glob over the path, e.g. "/api/v3/*"
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", re.compile(fnmatch.translate(self.path)))

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and self._regex.match(path) is not None

    @property
    def literal(self) -> bool:
        return not (_GLOB & set(self.path))

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


DEFAULT_ALLOW = (Rule("*", "/*"),)
#: Decisions one allow-list remembers at most, for paths of up to so many characters.
_DECIDED_MAX, _DECIDED_PATH_MAX = 256, 2048


class AllowList:
    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        #: :meth:`decide`'s answers so far: a function of the rules, which never change, and of
        #: ``(method, path)``; emptied when it holds too many (an engine signs a few endpoints).
        self._decided: dict[tuple[str, str], tuple[bool, str]] = {}

    @classmethod
    def from_config(cls, value: object) -> AllowList:
        """``allow``: absent (every endpoint but the money-moving ones), or a list of rules,
        each ``"METHOD /path/glob"`` or ``{"method": ..., "path": ...}``.

        Raises:
            ConfigError: a malformed rule (the message names it by position).
        """
        if value is None:
            return cls(DEFAULT_ALLOW)
        if not isinstance(value, list) or not value or len(value) > 256:
            raise ConfigError("'allow' must be a list of 1 to 256 rules such as \"GET /api/v3/*\"")
        rules = []
        for index, item in enumerate(value):
            method: object
            path: object
            if isinstance(item, str) and " " in item:
                method, path = item.split(" ", 1)
            elif isinstance(item, dict) and set(item) <= {"method", "path"}:
                method, path = item.get("method", "*"), item.get("path")
            else:
                raise ConfigError(f'\'allow\' rule {index} must be "METHOD /path" or {{"method", "path"}}')
            if not isinstance(method, str) or not isinstance(path, str) or not path.startswith("/"):
                raise ConfigError(f"'allow' rule {index} needs a method and a path starting with '/'")
            if len(path) > 512 or not path.isprintable() or " " in path:
                raise ConfigError(f"'allow' rule {index} has an unusable path")
            method = method.upper()
            if method != "*" and not method.isalpha():
                raise ConfigError(f"'allow' rule {index} has an unusable method")
            rules.append(Rule(method, path))
        return cls(rules)

    def to_config(self) -> list[str]:
        return [str(rule) for rule in self.rules]

    def decide(self, method: str, path: str) -> tuple[bool, str]:
        """Whether ``method path`` may be signed, and why (for the FORBIDDEN message and the log).

        ``path`` must already be plain (see ``_signing``): no ``%``, ``;``, ``//``, ``.`` segments.
        """
        key = (method, path)
        decided = self._decided.get(key)
        if decided is None:
            decided = self._decide(method, path)
            if len(path) <= _DECIDED_PATH_MAX:
                if len(self._decided) >= _DECIDED_MAX:
                    self._decided.clear()
                self._decided[key] = decided
        return decided

    def _decide(self, method: str, path: str) -> tuple[bool, str]:
        matching = [rule for rule in self.rules if rule.matches(method, path)]
        if not matching:
            return False, f"{method} {path} matches no rule of the credential's allow-list"
        # An exchange's router may not care about case or a ".json": this check must not either.
        if not any(rule.literal for rule in matching):
            if moves_money(path):
                return False, (
                    f"{method} {path} moves money out (withdrawal or transfer): refused unless an allow rule "
                    "names this exact path"
                )
            if manages_keys(path):
                return False, (
                    f"{method} {path} creates or changes API keys (their IP binding, their rights): refused "
                    "unless an allow rule names this exact path"
                )
        return True, f"allowed by {matching[0]}"
