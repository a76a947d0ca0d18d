"""Opaque page tokens: a repository's resume position, bound to the query it belongs to.

A token is base64url JSON of `{"s": scope, "k": key}`. The scope names the table, the device and
the order, so a token from another device, table or listing is rejected instead of being passed on
to the store. Tokens are not secret: they only say where to resume within the caller's own query.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeVar

import msgspec

from trackstore.errors import INVALID, Error

MAX_TOKEN_LENGTH = 2048
_T = TypeVar("_T")


class _Token(msgspec.Struct, frozen=True):
    s: str
    k: dict[str, Any]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Token)


def encode_token(scope: str, key: dict[str, Any]) -> str:
    raw = _encoder.encode(_Token(s=scope, k=key))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def key_field(key: dict[str, Any], name: str, kind: type[_T]) -> _T:
    """A field of a decoded token's key, of the expected type; Error(INVALID) otherwise, so a
    hand-made token never reaches a store as a malformed key."""
    value = key.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Error(INVALID, "next_token is not valid")
    return value


def decode_token(token: str, scope: str) -> dict[str, Any]:
    """The key inside `token`; Error(INVALID) when it is malformed or belongs to another scope."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise Error(INVALID, "next_token is not valid")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = _decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise Error(INVALID, "next_token is not valid") from None
    if decoded.s != scope:
        raise Error(INVALID, "next_token belongs to another query")
    return decoded.k
