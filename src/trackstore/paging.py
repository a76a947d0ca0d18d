"""Opaque page tokens: a repository's resume position, bound to the query it belongs to.

A token is base64url JSON of `{"s": digest of the scope, "k": key}`. The scope names the store,
the listing and the whole query as the caller gave it (device, order, window, page size), so a
token from any other query is rejected (400) instead of being passed on to the store; only its
digest travels, so no table name does. Every field of the key is checked for type and range.
Tokens are not secret: they only say where to resume within the caller's own query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
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


# Keys hold epoch milliseconds and DynamoDB numbers; beyond 2^53 nothing is either.
MAX_KEY_INT = 2**53


def encode_token(scope: str, key: dict[str, Any]) -> str:
    raw = _encoder.encode(_Token(s=_digest(scope), k=key))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _digest(scope: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(scope.encode()).digest()[:12]).decode()


def key_field(key: dict[str, Any], name: str, kind: type[_T]) -> _T:
    """A field of a decoded token's key, of the expected type; Error(INVALID) otherwise, so a
    hand-made token never reaches a store as a malformed key."""
    value = key.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Error(INVALID, "next_token is not valid")
    if isinstance(value, int) and not 0 <= value <= MAX_KEY_INT:
        raise Error(INVALID, "next_token is not valid")
    if isinstance(value, str) and not 0 < len(value) <= MAX_TOKEN_LENGTH:
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
    if not hmac.compare_digest(decoded.s.encode(), _digest(scope).encode()):
        raise Error(INVALID, "next_token belongs to another query (its parameters must not change)")
    return decoded.k
