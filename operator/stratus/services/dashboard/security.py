"""Sign-ins, sessions, CSRF and security headers of the dashboard (no I/O).

- The user's token lives only here, in memory on the server, keyed by a random session
  id; the browser holds the id in an HttpOnly, SameSite=Strict cookie (Secure over TLS),
  so no page and no script ever sees the token.
- A session ends at the earlier of its absolute lifetime, the token's own expiry (the
  `exp` claim of a JWT, read but not trusted: the API server decides), and an idle
  timeout; sign-out deletes it.
- Every change (POST) carries the session's CSRF token (a form field or the
  X-CSRF-Token header); the sign-in form, which has no session yet, carries an HMAC of a
  random nonce held in its own HttpOnly cookie (a stateless double submit).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field

import yaml

SESSION_COOKIE = "stratus_session"
SIGNIN_COOKIE = "stratus_signin"

#: Content Security Policy: nothing inline, nothing from another origin, no framing.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # Not no-referrer: with it browsers send "Origin: null" on form posts, and the origin
    # check of changes needs the real one. same-origin keeps URLs from other sites.
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


class CredentialError(ValueError):
    """What the user pasted is not a token or a token kubeconfig (the message says why)."""


@dataclass
class Credential:
    token: str = field(repr=False)
    namespace: str = ""  # the kubeconfig context's namespace, a project hint


def parse_credential(text: str) -> Credential:
    """A bearer token, or a kubeconfig whose current context's user has a token (what a
    Stratus AccessToken delivers). Client certificates and exec plugins are refused: the
    dashboard acts only with bearer tokens. The kubeconfig's server is ignored."""
    text = (text or "").strip()
    if not text:
        raise CredentialError("Paste an AccessToken kubeconfig or a bearer token.")
    if "\n" not in text and " " not in text and ":" not in text:
        return Credential(token=text)
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        raise CredentialError("This is neither a token nor a kubeconfig (the YAML does not parse).") from None
    if not isinstance(config, dict) or config.get("kind", "Config") != "Config":
        raise CredentialError("This is neither a token nor a kubeconfig.")
    contexts = {c.get("name"): c.get("context") or {} for c in config.get("contexts") or [] if isinstance(c, dict)}
    users = {u.get("name"): u.get("user") or {} for u in config.get("users") or [] if isinstance(u, dict)}
    current = config.get("current-context") or (next(iter(contexts)) if len(contexts) == 1 else None)
    if current not in contexts:
        raise CredentialError("The kubeconfig has no current context with a user.")
    ctx = contexts[current]
    user = users.get(ctx.get("user"))
    if not user:
        raise CredentialError("The kubeconfig has no current context with a user.")
    token = user.get("token")
    if not token:
        if user.get("exec") or user.get("client-certificate-data") or user.get("client-certificate"):
            raise CredentialError("Only token kubeconfigs are accepted (a Stratus AccessToken's kubeconfig); "
                                  "this one uses a client certificate or an exec plugin.")
        raise CredentialError("The kubeconfig's user has no token.")
    return Credential(token=str(token).strip(), namespace=str(ctx.get("namespace") or ""))


def token_expiry(token: str) -> float | None:
    """The `exp` of a JWT (seconds since the epoch), or None. Read, not verified: it only
    ends a sign-in earlier; whether the token is good is the API server's call."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    return float(exp) if isinstance(exp, (int, float)) else None


def service_account_namespace(username: str) -> str:
    """system:serviceaccount:NS:NAME -> NS (the project an AccessToken belongs to)."""
    parts = username.split(":")
    return parts[2] if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"] else ""


@dataclass
class Session:
    sid: str = field(repr=False)
    token: str = field(repr=False)
    username: str
    groups: list[str]
    csrf: str = field(repr=False)
    created: float
    expires: float
    last_seen: float
    projects: list[str] = field(default_factory=list)
    project: str = ""
    flash: list[tuple[str, str]] = field(default_factory=list)
    cache: dict = field(default_factory=dict, repr=False)  # permission answers, briefly

    def remaining(self, now: float | None = None) -> float:
        return self.expires - (now if now is not None else time.time())


class SessionStore:
    """Sessions in this process's memory (one dashboard replica, or sticky sessions)."""

    def __init__(self, lifetime: float = 8 * 3600, idle: float = 3600, max_sessions: int = 10000,
                 clock=time.time):
        self.lifetime = lifetime
        self.idle = idle
        self.max_sessions = max_sessions
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, token: str, username: str, groups: list[str], projects: list[str]) -> Session:
        now = self.clock()
        expires = now + self.lifetime
        exp = token_expiry(token)
        if exp is not None:
            expires = min(expires, exp)
        session = Session(sid=secrets.token_urlsafe(32), token=token, username=username, groups=list(groups),
                          csrf=secrets.token_urlsafe(32), created=now, expires=expires, last_seen=now,
                          projects=projects, project=projects[0] if projects else "")
        with self._lock:
            self._expire(now)
            if len(self._sessions) >= self.max_sessions:
                oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
                self._sessions.pop(oldest.sid, None)
            self._sessions[session.sid] = session
        return session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        now = self.clock()
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                return None
            if now >= session.expires or now - session.last_seen > self.idle:
                self._sessions.pop(sid, None)
                return None
            session.last_seen = now
            return session

    def alive(self, session: Session) -> bool:
        """Whether the session still stands (a long stream checks this between events)."""
        now = self.clock()
        with self._lock:
            return self._sessions.get(session.sid) is session and now < session.expires

    def delete(self, sid: str | None) -> None:
        if sid:
            with self._lock:
                self._sessions.pop(sid, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self, now: float) -> None:
        for sid in [s.sid for s in self._sessions.values() if now >= s.expires or now - s.last_seen > self.idle]:
            del self._sessions[sid]


def signin_csrf(secret: bytes, nonce: str) -> str:
    return hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest()


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


class SecurityHeaders:
    """Pure ASGI middleware (streams stay streams): the security headers on every answer,
    and no caching of pages (they hold a user's data)."""

    def __init__(self, app, tls: bool = False):
        self.app = app
        self.tls = tls

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        static = scope.get("path", "").startswith("/static/")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.decode().lower() not in SECURITY_HEADERS]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                if self.tls:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
