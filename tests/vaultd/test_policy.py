"""The policy: what a rule may say, which rule decides, the defaults, and the reasons given."""

from __future__ import annotations

from typing import Any

import pytest

from vaultd._policy import METHODS, Access, Decision, Identity, Policy, PolicyError

OWN = 1000
ENGINE_A = Identity(OWN, "engine-a.service", "/opt/engines/bin/engine")
ENGINE_B = Identity(OWN, "engine-b.service", "/opt/engines/bin/engine")
SHELL = Identity(OWN, "session-2.scope", "/usr/bin/bash")
OTHER = Identity(1001, "engine-a.service", "/opt/engines/bin/engine")

TWO_ENGINES = """
[[rule]]
unit = "engine-a.service"
credentials = ["deribit*"]
methods = ["get", "watch"]

[[rule]]
unit = "engine-?.service"
credentials = ["binance", "okx-[ab]"]
methods = ["sign", "status"]
"""


def rules(*tables: dict[str, Any]) -> Policy:
    return Policy.from_config({"rules": list(tables)})


def decide(policy: Policy, who: Identity, credential: str | None, method: str) -> Decision:
    return policy.decide(who, credential, method, own_uid=OWN)


# -- what a policy may say ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"rules": [{}]}, "rule 1: is empty"),
        ({"rules": ["get"]}, "rule 1: must be a table"),
        (
            {
                "rules": [
                    {"credentials": ["x"], "methods": ["get"]},
                    {"credentials": ["x"], "methods": ["get"], "uuid": 3},
                ]
            },
            "rule 2: unknown key 'uuid' (known: uid, unit, exe, credentials, methods)",
        ),
        ({"rules": [{"uid": "1000", "methods": []}]}, "rule 1: 'uid' must be an integer"),
        ({"rules": [{"uid": True, "methods": []}]}, "rule 1: 'uid' must be an integer"),
        ({"rules": [{"uid": -1, "methods": []}]}, "rule 1: 'uid' must be an integer from 0 to 4294967294"),
        ({"rules": [{"unit": 5, "methods": []}]}, "rule 1: 'unit' must be a unit name or glob"),
        ({"rules": [{"unit": "a/b.service", "methods": []}]}, "rule 1: 'unit' must be a unit name or glob"),
        ({"rules": [{"exe": "bin/engine", "methods": []}]}, "rule 1: 'exe' must be an absolute path"),
        ({"rules": [{"credentials": ["x"]}]}, "rule 1: 'methods' is missing"),
        ({"rules": [{"credentials": ["x"], "methods": "get"}]}, "rule 1: 'methods' must be a list of strings"),
        ({"rules": [{"credentials": ["x"], "methods": ["get", "delete"]}]}, "rule 1: unknown method 'delete'"),
        ({"rules": [{"methods": ["get"]}]}, "rule 1: 'credentials' is missing"),
        ({"rules": [{"credentials": "x", "methods": ["get"]}]}, "rule 1: 'credentials' must be a list of strings"),
        ({"rules": [{"credentials": [1], "methods": ["get"]}]}, "rule 1: 'credentials' must be a list of strings"),
        ({"rules": [{"credentials": [""], "methods": ["get"]}]}, "rule 1: 'credentials' holds an empty or invalid"),
        ({"rules": {}}, "'rules' must be a list"),
        ({"rules": [], "default": "allow"}, "unknown key 'default'"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_rule_and_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_config(config)
    assert str(info.value).startswith(message), str(info.value)


def test_status_alone_needs_no_credentials_and_an_empty_methods_list_is_a_deny_rule() -> None:
    policy = rules({"unit": "untrusted.service", "methods": []}, {"methods": ["status"]})
    assert decide(policy, SHELL, None, "status") == Decision(
        True, 2, "rule 2 (any process of the daemon's uid) allows status"
    )
    assert decide(policy, Identity(OWN, "untrusted.service"), None, "status") == Decision(
        False, 1, "rule 1 (unit untrusted.service) does not allow status"
    )


def test_toml_errors_give_the_line() -> None:
    text = '[[rule]]\ncredentials = ["a"]\nmethods = ["get"]\n\n[[rule]]\nunit = "x.service"\nmethods = ["fly"]\n'
    with pytest.raises(PolicyError, match=r"^rule 2 \(line 5\): unknown method 'fly' in 'methods'"):
        Policy.from_toml(text)
    with pytest.raises(PolicyError, match=r"^not valid TOML: .*line 3, column 17"):
        Policy.from_toml('[[rule]]\nmethods = ["get"]\ncredentials = 3 4\n')
    with pytest.raises(PolicyError, match="unknown key 'rules' at the top"):
        Policy.from_toml('[[rules]]\nmethods = ["get"]\n')
    with pytest.raises(PolicyError, match="write each rule as"):
        Policy.from_toml("rule = 3\n")


def test_toml_and_the_stored_form_round_trip() -> None:
    policy = Policy.from_toml(TWO_ENGINES + '\n[[rule]]\nuid = 1001\nexe = "/usr/bin/q \\"x\\""\nmethods = []\n')
    assert len(policy.rules) == 3
    assert Policy.from_config(policy.to_config()) == policy
    assert Policy.from_toml(policy.to_toml()) == policy
    assert policy.to_config()["rules"][0] == {
        "unit": "engine-a.service",
        "credentials": ["deribit*"],
        "methods": ["get", "watch"],
    }
    shown = policy.to_toml()
    assert '# rule 2\n[[rule]]\nunit = "engine-?.service"\n' in shown
    assert Policy.from_toml(Policy().to_toml()) == Policy()


def test_methods_are_kept_in_one_order_without_repeats() -> None:
    policy = rules({"credentials": ["a", "a"], "methods": ["watch", "get", "watch"]})
    assert policy.rules[0].methods == ("get", "watch")
    assert policy.rules[0].credentials == ("a",)


# -- which rule decides --------------------------------------------------------------------------


def test_the_first_matching_rule_decides_alone() -> None:
    policy = Policy.from_toml(TWO_ENGINES)
    # engine-a matches rule 1 first: rule 2 would allow sign on binance, but rule 1 decides.
    assert decide(policy, ENGINE_A, "binance", "sign") == Decision(
        False, 1, "rule 1 (unit engine-a.service) does not allow sign"
    )
    assert decide(policy, ENGINE_B, "binance", "sign") == Decision(
        True, 2, "rule 2 (unit engine-?.service) allows sign on binance"
    )
    assert decide(policy, ENGINE_A, "deribit-main", "get") == Decision(
        True, 1, "rule 1 (unit engine-a.service) allows get on deribit*"
    )
    assert decide(policy, ENGINE_B, "deribit-main", "get").allowed is False
    assert decide(policy, ENGINE_A, "binance", "get") == Decision(
        False, 1, "rule 1 (unit engine-a.service) does not allow 'binance' (its credentials: deribit*)"
    )
    assert decide(policy, ENGINE_B, None, "status") == Decision(True, 2, "rule 2 (unit engine-?.service) allows status")


def test_globs_match_whole_names_and_case() -> None:
    policy = Policy.from_toml(TWO_ENGINES)
    assert decide(policy, ENGINE_B, "okx-a", "sign").allowed
    assert not decide(policy, ENGINE_B, "okx-c", "sign").allowed
    assert not decide(policy, ENGINE_B, "binance-2", "sign").allowed
    assert not decide(policy, ENGINE_A, "Deribit", "get").allowed
    assert not decide(policy, Identity(OWN, "engine-ab.service"), "binance", "sign").allowed  # ? is one character


def test_exe_is_an_exact_path_and_an_unknown_unit_or_exe_never_matches() -> None:
    policy = rules({"exe": "/opt/engines/bin/engine", "credentials": ["*"], "methods": ["get"]})
    assert decide(policy, ENGINE_A, "x", "get").allowed
    assert not decide(policy, Identity(OWN, "engine-a.service", "/opt/engines/bin/engine2"), "x", "get").allowed
    assert not decide(policy, Identity(OWN, "engine-a.service", None), "x", "get").allowed
    by_unit = rules({"unit": "*", "credentials": ["*"], "methods": ["get"]})
    assert decide(by_unit, SHELL, "x", "get").allowed
    assert not decide(by_unit, Identity(OWN, None, "/usr/bin/bash"), "x", "get").allowed


def test_a_rule_reaches_another_uid_only_by_naming_it() -> None:
    policy = rules(
        {"unit": "engine-a.service", "credentials": ["*"], "methods": ["get"]},
        {"uid": 1001, "credentials": ["shared-*"], "methods": ["get"]},
    )
    # OTHER runs in a unit called engine-a.service too: rule 1 names no uid, so not it.
    assert policy.match(OTHER, own_uid=OWN) is policy.rules[1]
    assert decide(policy, OTHER, "deribit", "get") == Decision(
        False, 2, "rule 2 (uid 1001) does not allow 'deribit' (its credentials: shared-*)"
    )
    assert decide(policy, OTHER, "shared-prices", "get").allowed
    assert policy.match(Identity(1002, "engine-a.service"), own_uid=OWN) is None


# -- defaults and reasons ---------------------------------------------------------------------------


def test_without_rules_the_own_uid_may_do_everything_and_others_nothing() -> None:
    empty = Policy()
    for method in METHODS:
        assert decide(empty, SHELL, "anything", method) == Decision(
            True, None, "default: the daemon's own uid, no rules"
        )
    assert decide(empty, OTHER, "anything", "get") == Decision(
        False, None, "default: uid 1001 is not the daemon's, and there are no rules"
    )


def test_with_rules_an_unmatched_peer_is_refused_and_told_who_it_is() -> None:
    policy = Policy.from_toml(TWO_ENGINES)
    assert decide(policy, SHELL, "deribit", "get") == Decision(
        False, None, "no rule matches uid 1000, unit session-2.scope, exe /usr/bin/bash"
    )
    assert decide(policy, Identity(1001), None, "status").why == "no rule matches uid 1001"


def test_a_rule_without_matchers_covers_the_own_uid() -> None:
    policy = rules({"credentials": ["public-*"], "methods": ["get"]})
    assert decide(policy, SHELL, "public-prices", "get") == Decision(
        True, 1, "rule 1 (any process of the daemon's uid) allows get on public-*"
    )
    assert not decide(policy, OTHER, "public-prices", "get").allowed


def test_an_unknown_method_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="not a policy method"):
        decide(Policy(), SHELL, "x", "credential.put")


# -- one connection's standing ------------------------------------------------------------------------


def test_access_caches_decisions_and_knows_what_status_shows() -> None:
    policy = Policy.from_toml(TWO_ENGINES)
    access = Access(policy, ENGINE_B, OWN)
    first = access.check("sign", "binance")
    assert first.allowed and access.check("sign", "binance") is first
    assert access.shows("okx-a") and not access.shows("deribit")
    assert access.first_denial("get", "deribit") and not access.first_denial("get", "deribit")
    assert Access(Policy(), SHELL, OWN).shows("anything")
    assert not Access(policy, SHELL, OWN).shows("binance")


def test_while_sealed_the_own_uid_goes_on_and_another_uid_does_not() -> None:
    own, other = Access(None, SHELL, OWN), Access(None, OTHER, OWN)
    assert own.sealed and own.check("get", "x").allowed and own.check("status", None).allowed
    assert other.sealed and not other.check("get", "x").allowed
    assert other.check("status", None).why == "the vault is locked: the policy is sealed in it"


def test_a_stored_policy_that_cannot_be_read_refuses_everything() -> None:
    broken = Policy(broken="rule 1: is empty")
    decision = decide(broken, SHELL, "x", "get")
    assert not decision.allowed and "cannot be read (rule 1: is empty)" in decision.why
    assert not Access(broken, SHELL, OWN).check("status", None).allowed


class _Execs:
    """A peer whose process may exec: ``exe_holds`` as :class:`vaultd._peer.Peer` has it, counted."""

    def __init__(self, who: Identity) -> None:
        self.uid, self.unit, self.exe = who.uid, who.unit, who.exe
        self.holds = True
        self.asked = 0

    def exe_holds(self) -> bool:
        self.asked += 1
        return self.holds


def test_an_exe_rule_is_rechecked_per_decision_and_lost_for_good_once_the_process_execs() -> None:
    policy = rules(
        {"exe": "/opt/engines/bin/engine", "credentials": ["deribit*"], "methods": ["get", "status"]},
        {"credentials": ["binance"], "methods": ["status"]},
    )
    peer = _Execs(ENGINE_A)
    access = Access(policy, peer, OWN)
    assert access.check("get", "deribit-main").allowed and access.shows("deribit-main")
    assert peer.asked == 2  # each decision asks, cached or not
    assert access.check("get", "deribit-main").allowed and peer.asked == 3
    peer.holds = False  # the process exec'd another program (or exited)
    decision = access.check("get", "deribit-main")
    assert not decision.allowed and decision.rule == 2
    assert decision.why == (
        "rule 2 (any process of the daemon's uid) does not allow get (its exe /opt/engines/bin/engine"
        " no longer holds: the process that connected has exec'd or exited since)"
    )
    assert access.shows("binance") and not access.shows("deribit-main")  # rule 2's share now
    peer.holds = True  # an exec back to the engine does not bring the rule back
    assert not access.check("get", "deribit-main").allowed
    assert peer.asked == 4  # lost once, never asked again

    # Under a rule without exe (or with no rules) the peer is never asked: no cost on that path.
    for other_policy, who in ((policy, _Execs(SHELL)), (Policy(), _Execs(ENGINE_A))):
        other = Access(other_policy, who, OWN)
        assert other.check("status", None).allowed and other.shows("binance")
        assert who.asked == 0


def test_lock_and_admin_are_always_the_owners_and_a_rule_gives_them_to_another_uid() -> None:
    """What `vaultctl policy test` says must be what the daemon does (SPEC.md section 11)."""
    policy = Policy.from_config(
        {"rules": [{"credentials": ["x"], "methods": ["get"]}, {"uid": 1001, "methods": ["lock"]}]}
    )
    for method in ("lock", "admin"):
        decision = policy.decide(Identity(uid=1000), None, method, own_uid=1000)
        assert decision.allowed and "never governed by rules" in decision.why
    assert policy.decide(Identity(uid=1001), None, "lock", own_uid=1000).allowed
    refused = policy.decide(Identity(uid=1001), None, "admin", own_uid=1000)
    assert not refused.allowed and "does not allow admin" in refused.why
    assert not policy.decide(Identity(uid=1002), None, "lock", own_uid=1000).allowed
