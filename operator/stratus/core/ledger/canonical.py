"""Canonical JSON: the exact bytes of a ledger record that are signed, hashed and stored.

Design decisions
================

Canonical JSON (the exact bytes that are signed, hashed and stored).
    1. Values are objects, arrays, strings, integers, ``true``, ``false`` and ``null``.
       Floating-point numbers are refused (``1.0``, ``1e3``, ``NaN``, ``Infinity``).
    2. Integers are written in shortest decimal form: an optional ``-``, no ``+``, no
       leading zeros, no exponent, no ``-0``. Their size is unbounded: byte-seconds
       exceed 2**53 quickly, so readers must parse integers exactly, not as doubles.
    3. Object member names are ASCII strings, unique within their object, and members
       are sorted by name in ascending byte (= code point) order.
    4. Strings are UTF-8 (no byte-order mark, no lone surrogates). Only these are
       escaped: ``"`` as ``\\"``, ``\\`` as ``\\\\``, U+0008/0009/000A/000C/000D as
       ``\\b \\t \\n \\f \\r``, and every other character below U+0020 as ``\\u00xx``
       with lowercase hex. Every other character, ``/`` and non-ASCII included, is
       written as itself.
    5. No whitespace outside strings: the separators are ``,`` and ``:``. No trailing
       newline.
    Within these limits (ASCII member names, integers below 2**53 in magnitude) this
    is byte-for-byte RFC 8785 (JCS); the only divergence is that large integers keep
    their exact digits instead of JCS's double formatting. A reader rejects any record
    whose stored bytes are not exactly the canonical form of what they parse to, so a
    record has one and only one encoding.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["CanonicalError", "canonical_json", "parse_canonical"]


class CanonicalError(ValueError):
    """A value that has no canonical JSON form, or bytes that are not canonical JSON."""


def _check_canonical(value: Any, path: str = "$") -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise CanonicalError(f"{path}: string is not valid Unicode (lone surrogate)") from None
        return
    if isinstance(value, float):
        raise CanonicalError(f"{path}: floating-point number {value!r}; use an integer")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str) or not k.isascii():
                raise CanonicalError(f"{path}: member name {k!r} is not an ASCII string")
            _check_canonical(v, f"{path}.{k}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_canonical(v, f"{path}[{i}]")
        return
    raise CanonicalError(f"{path}: {type(value).__name__} has no JSON form")


def canonical_json(value: Any) -> bytes:
    """The canonical JSON bytes of ``value`` (see the module docstring for the rules)."""
    _check_canonical(value)
    return _dumps(value)


def _no_float(text: str) -> Any:
    raise CanonicalError(f"floating-point number {text}")


def _dumps(value: Any) -> bytes:
    """Serialise without the type walk: only for values already known to be canonical-safe."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def parse_canonical(data: bytes) -> Any:
    """Parse bytes that must be canonical JSON; anything else raises CanonicalError.

    Parsing then re-serialising must give the same bytes back, which also refuses
    duplicate member names (only one survives the parse), any whitespace, unsorted
    members and alternative spellings of numbers and strings.
    """
    data = bytes(data)
    try:
        value = json.loads(data.decode("utf-8"), parse_float=_no_float, parse_constant=_no_float)
    except CanonicalError:
        raise
    except (UnicodeDecodeError, ValueError) as e:
        raise CanonicalError(f"not JSON: {e}") from None
    try:
        again = _dumps(value)
    except UnicodeEncodeError:
        raise CanonicalError("string is not valid Unicode (lone surrogate)") from None
    if again != data:
        raise CanonicalError("valid JSON but not in canonical form")
    if not data.isascii():
        _check_canonical(value)  # non-ASCII bytes: make sure none is in a member name
    return value


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(text: str) -> bytes:
    """Decode unpadded base64url, refusing any other spelling of the same bytes."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64u(raw) != text:
        raise ValueError("non-canonical base64url")
    return raw
