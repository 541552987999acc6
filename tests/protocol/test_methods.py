"""Parameter schemas and the default socket path."""

from __future__ import annotations

import pytest

from vaultd_protocol import Field, InvalidParams, Method, default_socket_path, parse_params
from vaultd_protocol._methods import KINDS, _check


def test_defaults_fill_in_and_an_empty_array_is_an_empty_map() -> None:
    assert parse_params(Method.TOKEN_GET, [{"name": "x"}]) == {"name": "x", "min_ttl": 0.0}
    assert parse_params(Method.STATUS, []) == {}
    assert parse_params(Method.STATUS, [{}]) == {}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([{"name": 5}], "'name' must be a string"),
        ([{}], "missing parameter 'name'"),
        ([{"name": "x", "min_ttl": "soon"}], "'min_ttl' must be a finite number"),
        ([{"name": "x", "min_ttl": float("nan")}], "finite"),
        ([{"name": "x", "min_ttl": -1}], "must not be negative"),
        ([{"name": "x", "min_ttl": True}], "finite number"),
        ([{"name": "x", "colour": "red"}], "unknown parameter 'colour'"),
        ([{"name": "x" * 65}], "longer than 64"),
        (["x"], "one map"),
        ([{"name": "x"}, {}], "one map"),
    ],
)
def test_bad_params_are_named(params: list[object], message: str) -> None:
    with pytest.raises(InvalidParams, match=message):
        parse_params(Method.TOKEN_GET, params)


def test_a_bad_passphrase_param_is_never_echoed() -> None:
    with pytest.raises(InvalidParams) as info:
        parse_params(Method.VAULT_UNLOCK, [{"passphrase": "x" * 5000}])
    assert "xxxx" not in str(info.value)


def test_default_socket_path() -> None:
    assert default_socket_path({"VAULTD_SOCKET": "/s/v.sock", "XDG_RUNTIME_DIR": "/run/user/7"}, 7) == "/s/v.sock"
    assert default_socket_path({"XDG_RUNTIME_DIR": "/run/user/7/"}, 7) == "/run/user/7/vaultd/vaultd.sock"
    assert default_socket_path({}, 7) == "/tmp/vaultd-7/vaultd.sock"


def test_a_field_of_an_unknown_kind_is_refused_when_declared() -> None:
    with pytest.raises(ValueError, match="unknown field kind 'float'"):
        Field("x", "float")
    # Every kind a field may declare has its check, and each check passes a good value.
    goods = {
        "str": "s",
        "secret": "s",
        "int": 1,
        "number": 1.5,
        "bool": True,
        "map": {},
        "names": ["a"],
        "body": b"b",
        "requests": [{}],
    }
    assert set(goods) == KINDS
    for kind, good in goods.items():
        assert _check(Field("x", kind), good) == good


def test_sign_many_takes_1_to_256_request_maps() -> None:
    one = {"name": "k", "method": "GET", "url": "https://api.example.com/x"}
    assert parse_params(Method.TOKEN_SIGN_MANY, [{"requests": [one] * 256}]) == {"requests": [one] * 256}
    for bad, message in (
        ([], "array of 1 to 256 requests"),
        ([one] * 257, "array of 1 to 256 requests"),
        ({"0": one}, "array of 1 to 256 requests"),
        ([one, "GET"], "must hold maps"),
    ):
        with pytest.raises(InvalidParams, match=message):
            parse_params(Method.TOKEN_SIGN_MANY, [{"requests": bad}])
    # Each request is checked on its own by the daemon: a bad one is its own error, not the call's.
    assert parse_params(Method.TOKEN_SIGN_MANY, [{"requests": [{"colour": "red"}]}]) == {
        "requests": [{"colour": "red"}]
    }
