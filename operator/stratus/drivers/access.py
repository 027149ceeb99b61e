"""Who is calling, and may they: TokenReview and SubjectAccessReview, as Kubernetes
components authenticate and authorise callers of their own HTTP endpoints (the kubelet's
and the API server's delegated auth). The HTTP services of the operator use it before they
look anything up.

Answers are cached for :data:`TTL` seconds (positive and negative) under a SHA-256 of the
token, in a bounded map, so a burst of scrapes or downloads costs one review; a revoked
token stops working within that bound, the same as the API server's own token cache.
Tokens are never logged and never kept in the clear.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import OrderedDict

from . import kube

TTL = 10.0
MAX_ENTRIES = 4096


@dataclasses.dataclass(frozen=True)
class Caller:
    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


class _Cache:
    def __init__(self, ttl: float = TTL, size: int = MAX_ENTRIES) -> None:
        self.ttl, self.size = ttl, size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            hit = self._items.get(key)
            if hit is None or hit[0] < time.monotonic():
                self._items.pop(key, None)
                return None, False
            return hit[1], True

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = (time.monotonic() + self.ttl, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_tokens = _Cache()
_decisions = _Cache()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authenticate(token: str, audiences: list[str] | None = None) -> Caller | None:
    """The caller a token belongs to (TokenReview), or None when the API server says no."""
    key = (hashlib.sha256(token.encode()).hexdigest(), tuple(audiences or ()))
    cached, hit = _tokens.get(key)
    if hit:
        return cached
    status = kube.review_token(token, audiences)
    caller = None
    u = status.get("user") or {}
    if status.get("authenticated") and u:
        caller = Caller(u.get("username", ""), u.get("uid") or "", tuple(u.get("groups") or ()),
                        tuple(sorted((k, tuple(v)) for k, v in (u.get("extra") or {}).items())))
    _tokens.put(key, caller)
    return caller


def allowed(caller: Caller, verb: str, *, path: str | None = None, group: str = "", resource: str = "",
            namespace: str = "", name: str = "", subresource: str = "") -> bool:
    """SubjectAccessReview: may the caller do ``verb`` on a non-resource ``path`` or on a resource."""
    if path is not None:
        attributes = {"nonResourceAttributes": {"path": path, "verb": verb}}
    else:
        attrs = {"verb": verb, "group": group, "resource": resource}
        attrs.update({k: v for k, v in (("namespace", namespace), ("name", name), ("subresource", subresource)) if v})
        attributes = {"resourceAttributes": attrs}
    key = (caller, repr(sorted(attributes.items())))
    cached, hit = _decisions.get(key)
    if hit:
        return cached
    spec = {"user": caller.username, "uid": caller.uid, "groups": list(caller.groups),
            "extra": {k: list(v) for k, v in caller.extra}, **attributes}
    decision = bool(kube.review_access(spec).get("allowed"))
    _decisions.put(key, decision)
    return decision
