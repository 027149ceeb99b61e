"""Sign-in, sessions, CSRF and headers of the dashboard: pure parts table-tested, and the
app's refusals (no session, no CSRF token, another origin) through starlette's TestClient
with no API server behind it (each refusal happens before any API call)."""

from __future__ import annotations

import base64
import json

import pytest
from starlette.testclient import TestClient

from stratus.drivers.userkube import Cluster, KubeError
from stratus.services.dashboard import Settings, create_app
from stratus.services.dashboard.security import (CSP, SESSION_COOKIE, CredentialError, SessionStore, parse_credential,
                                                 service_account_namespace, signin_csrf, token_expiry)


def jwt(payload: dict) -> str:
    part = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJSUzI1NiJ9.{part}.c2lnbmF0dXJl"


KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://elsewhere.example:6443"}}]
users: [{name: u, user: {token: TOKEN}}]
contexts: [{name: ctx, context: {cluster: c, user: u, namespace: proj-a}}]
current-context: ctx
"""


@pytest.mark.parametrize("text, token, namespace", [
    ("abc.def.ghi", "abc.def.ghi", ""),
    ("  tok123\n", "tok123", ""),
    (KUBECONFIG, "TOKEN", "proj-a"),
    (KUBECONFIG.replace("current-context: ctx\n", ""), "TOKEN", "proj-a"),  # one context: that one
])
def test_credentials_accepted(text, token, namespace):
    cred = parse_credential(text)
    assert (cred.token, cred.namespace) == (token, namespace)
    assert token not in repr(cred)


@pytest.mark.parametrize("text, says", [
    ("", "Paste"),
    ("kind: Pod\nmetadata: {}", "neither"),
    ("{{{ not yaml", "neither"),
    (KUBECONFIG.replace("{token: TOKEN}", "{client-certificate-data: QUJD, client-key-data: QUJD}"), "Only token kubeconfigs"),
    (KUBECONFIG.replace("{token: TOKEN}", "{exec: {command: aws}}"), "Only token kubeconfigs"),
    (KUBECONFIG.replace("{token: TOKEN}", "{username: x}"), "has no token"),
    (KUBECONFIG.replace("current-context: ctx", "current-context: other"), "no current context"),
])
def test_credentials_refused_with_a_reason(text, says):
    with pytest.raises(CredentialError, match=says):
        parse_credential(text)


@pytest.mark.parametrize("token, expected", [
    (jwt({"exp": 1700000000, "sub": "x"}), 1700000000.0),
    (jwt({"sub": "x"}), None),
    ("opaque-token", None),
    ("a.!!!.c", None),
])
def test_token_expiry(token, expected):
    assert token_expiry(token) == expected


@pytest.mark.parametrize("username, ns", [
    ("system:serviceaccount:proj-a:alice-x1", "proj-a"),
    ("alice@example.org", ""),
    ("system:serviceaccount:only", ""),
])
def test_service_account_namespace(username, ns):
    assert service_account_namespace(username) == ns


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def test_sessions_expire_absolutely_by_token_and_when_idle():
    clock = Clock()
    store = SessionStore(lifetime=3600, idle=600, clock=clock)
    s = store.create("opaque", "alice", [], ["a"])
    assert store.get(s.sid) is s and s.project == "a" and "opaque" not in repr(s)
    clock.now += 500
    assert store.get(s.sid) is s  # used: idle time restarts
    clock.now += 599
    assert store.get(s.sid) is s
    clock.now += 601
    assert store.get(s.sid) is None  # idle too long
    # The absolute lifetime ends even a busy session.
    s = store.create("opaque", "alice", [], [])
    for _ in range(8):
        clock.now += 500
        store.get(s.sid)
    assert store.get(s.sid) is None
    # A token that expires sooner ends the session with it.
    s = store.create(jwt({"exp": clock.now + 60}), "alice", [], [])
    assert s.expires == clock.now + 60
    clock.now += 61
    assert store.get(s.sid) is None and not store.alive(s)
    # Sign-out.
    s = store.create("opaque", "alice", [], [])
    store.delete(s.sid)
    assert store.get(s.sid) is None and store.get(None) is None and store.get("made-up") is None


def test_session_store_is_bounded():
    store = SessionStore(max_sessions=3, clock=Clock())
    sids = [store.create("t", f"u{i}", [], []).sid for i in range(5)]
    assert len(store) == 3 and store.get(sids[-1]) is not None


def test_kube_error_keeps_the_api_servers_words():
    body = json.dumps({"kind": "Status", "message": 'servers.stratus.dev "x" is forbidden: exceeded quota: stratus-quota',
                       "reason": "Forbidden", "details": {"causes": [{"field": "spec.flavor", "message": "Required value"}]}})
    err = KubeError.from_body(403, body)
    assert err.code == 403 and "exceeded quota: stratus-quota" in err.message
    assert err.field_errors() == {"spec.flavor": "Required value"}
    assert KubeError.from_body(502, "Bad gateway").message == "Bad gateway"


# --- The app's refusals (no API server needed) ---------------------------------------

@pytest.fixture
def app():
    settings = Settings(Cluster("https://127.0.0.1:9"), secret=b"k" * 32)
    return settings, TestClient(create_app(settings), base_url="http://dash.test")


def test_every_answer_has_the_security_headers(app):
    _, client = app
    for path in ("/signin", "/static/app.js", "/static/app.css", "/nowhere", "/healthz"):
        r = client.get(path)
        assert r.headers["content-security-policy"] == CSP, path
        assert "frame-ancestors 'none'" in CSP and "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
    assert client.get("/signin").headers["cache-control"] == "no-store"


def test_signin_form_needs_its_csrf_token_and_cookie(app):
    settings, client = app
    page = client.get("/signin")
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie  # plain http here
    assert client.post("/signin", data={"credential": "x"}).status_code == 403
    nonce = client.cookies.get("stratus_signin")
    r = client.post("/signin", data={"credential": "", "csrf": signin_csrf(settings.secret, nonce)})
    assert r.status_code == 400 and "Paste an AccessToken kubeconfig" in r.text


def test_changes_need_a_session_and_its_csrf_token(app):
    settings, client = app
    assert client.post("/p/a/servers", data={"name": "x"}).status_code == 401
    session = settings.sessions.create("opaque-token", "alice", [], ["a"])
    client.cookies.set(SESSION_COOKIE, session.sid)
    r = client.post("/p/a/servers/web/action", data={"action": "delete"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = client.post("/p/a/servers/web/action", data={"action": "delete", "csrf": "wrong"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = client.post("/p/a/servers/web/action", data={"action": "delete", "csrf": session.csrf},
                    headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "Cross-origin" in r.text
    # Sign-out needs the token too, and then the session is gone.
    assert client.post("/signout", data={}).status_code == 403
    r = client.post("/signout", data={"csrf": session.csrf}, follow_redirects=False)
    assert r.status_code == 303 and settings.sessions.get(session.sid) is None
    assert client.get("/p/a/servers", follow_redirects=False).headers["location"] == "/signin?next=/p/a/servers"


def test_names_in_urls_are_checked_before_any_api_call(app):
    settings, client = app
    session = settings.sessions.create("opaque-token", "alice", [], [])
    client.cookies.set(SESSION_COOKIE, session.sid)
    settings.sessions.get(session.sid).cache.update({(v, r, ""): (False, 1e18) for v, r in
                                                     [("list", "baremetalnodes"), ("list", "consolidationplans"),
                                                      ("list", "catalogs")]})
    r = client.get("/p/Not_A_Namespace/servers")
    assert r.status_code == 404 and "No such project" in r.text
