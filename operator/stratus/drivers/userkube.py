"""The Kubernetes API as one signed-in user: every request carries that user's bearer token.

The dashboard never acts with its own credentials for a user: it knows where the API
server is and which CA to trust (from its own in-cluster config or kubeconfig), and
each request it makes for a user carries only the user's token, so the API server's
authentication, RBAC, admission policies and quota decide. The server URL of a
kubeconfig a user signs in with is never used (that would let a user point the
dashboard at any host).

Async on aiohttp (one connection pool shared by all users; the token is per request),
so a server-sent-events stream per open page is a watch, not a thread.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import typing as t
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp

GROUP, VERSION = "stratus.dev", "v1alpha1"


class KubeError(Exception):
    """An API server refusal, with the API server's own words."""

    def __init__(self, code: int, message: str, reason: str = "", causes: list[dict] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.causes = causes or []

    @classmethod
    def from_body(cls, code: int, text: str) -> "KubeError":
        try:
            body = json.loads(text)
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        message = body.get("message") or text.strip()[:500] or f"HTTP {code}"
        causes = ((body.get("details") or {}).get("causes")) or []
        return cls(code, message, body.get("reason", ""), [c for c in causes if isinstance(c, dict)])

    def field_errors(self) -> dict[str, str]:
        """{"spec.flavor": "message", ...} from the Status causes (validation refusals)."""
        out: dict[str, str] = {}
        for cause in self.causes:
            name = cause.get("field") or ""
            if name:
                out.setdefault(name, cause.get("message", ""))
        return out


@dataclass
class Cluster:
    """Where the API server is and how to trust it (never whom to act as)."""

    host: str
    ca_file: str | None = None
    verify: bool = True
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    @classmethod
    def from_own_config(cls) -> "Cluster":
        """The API server the dashboard itself is configured for (in-cluster or kubeconfig)."""
        from . import kube

        cfg = kube.api_client().configuration
        return cls(host=cfg.host.rstrip("/"), ca_file=cfg.ssl_ca_cert, verify=bool(cfg.verify_ssl))

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self.host.startswith("https") and self.verify:
                ctx: ssl.SSLContext | bool = ssl.create_default_context(cafile=self.ca_file)
            elif self.host.startswith("https"):
                ctx = False
            else:
                ctx = None  # plain http (tests of a local proxy only)
            connector = aiohttp.TCPConnector(ssl=ctx, limit=200)
            self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def path(plural: str, namespace: str | None = None, name: str | None = None, group: str = GROUP,
         version: str = VERSION, subresource: str | None = None) -> str:
    base = f"/api/{version}" if group == "" else f"/apis/{group}/{version}"
    out = base + (f"/namespaces/{quote(namespace, safe='')}" if namespace else "") + f"/{plural}"
    if name:
        out += f"/{quote(name, safe='')}"
    if subresource:
        out += f"/{subresource}"
    return out


class UserKube:
    """The API server as the holder of `token`."""

    def __init__(self, cluster: Cluster, token: str):
        self.cluster = cluster
        self._token = token

    def __repr__(self) -> str:  # never the token
        return f"UserKube({self.cluster.host})"

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(self, method: str, url_path: str, body: t.Any = None, params: dict | None = None,
                      content_type: str = "application/json", timeout: float = 30) -> dict:
        data = None if body is None else json.dumps(body)
        try:
            async with self.cluster.session().request(
                method, self.cluster.host + url_path, data=data, params=params or None,
                headers=self._headers(content_type if data is not None else None),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                text = await resp.text()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise KubeError(503, f"The Kubernetes API server could not be reached ({type(exc).__name__}); try again shortly.",
                            "ServiceUnavailable") from None
        if resp.status >= 400:
            raise KubeError.from_body(resp.status, text)
        return json.loads(text) if text else {}

    # The verbs the pages use ----------------------------------------------------------
    async def list(self, plural: str, namespace: str | None = None, group: str = GROUP, version: str = VERSION,
                   **params) -> dict:
        return await self.request("GET", path(plural, namespace, group=group, version=version), params=params)

    async def get(self, plural: str, name: str, namespace: str | None = None, group: str = GROUP,
                  version: str = VERSION) -> dict:
        return await self.request("GET", path(plural, namespace, name, group=group, version=version))

    async def create(self, plural: str, body: dict, namespace: str | None = None, group: str = GROUP,
                     version: str = VERSION) -> dict:
        return await self.request("POST", path(plural, namespace, group=group, version=version), body)

    async def patch(self, plural: str, name: str, body: dict, namespace: str | None = None, group: str = GROUP,
                    version: str = VERSION) -> dict:
        return await self.request("PATCH", path(plural, namespace, name, group=group, version=version), body,
                                  content_type="application/merge-patch+json")

    async def delete(self, plural: str, name: str, namespace: str | None = None, group: str = GROUP,
                     version: str = VERSION) -> dict:
        return await self.request("DELETE", path(plural, namespace, name, group=group, version=version))

    async def whoami(self) -> dict:
        """SelfSubjectReview: the user name and groups the API server sees for this token
        (401 when it does not accept the token)."""
        review = await self.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                    {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        info = (review.get("status") or {}).get("userInfo") or {}
        return {"username": info.get("username", ""), "groups": info.get("groups") or []}

    async def can(self, verb: str, resource: str, namespace: str | None = None, group: str = GROUP,
                  subresource: str = "") -> bool:
        """SelfSubjectAccessReview: what the API server says this user may do."""
        attrs = {"verb": verb, "group": group, "resource": resource}
        if namespace:
            attrs["namespace"] = namespace
        if subresource:
            attrs["subresource"] = subresource
        review = await self.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                                    {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                                     "spec": {"resourceAttributes": attrs}})
        return bool((review.get("status") or {}).get("allowed"))

    async def watch(self, plural: str, namespace: str | None, resource_version: str, group: str = GROUP,
                    version: str = VERSION, timeout_seconds: int = 290, name: str | None = None) -> t.AsyncIterator[dict]:
        """The watch events after `resource_version` ({"type", "object"}), ending when the
        API server closes the stream (of one object when `name` is given). A 410 Gone (too
        old) arrives as an ERROR event."""
        params = {"watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(timeout_seconds)}
        if name:
            params["fieldSelector"] = f"metadata.name={name}"
        async with self.cluster.session().get(
            self.cluster.host + path(plural, namespace, group=group, version=version), params=params,
            headers=self._headers(), timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30),
        ) as resp:
            if resp.status >= 400:
                raise KubeError.from_body(resp.status, await resp.text())
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)


async def gather_dict(**coros) -> dict:
    """Await several calls at once; a KubeError becomes the value (the page shows it)."""
    keys = list(coros)
    results = await asyncio.gather(*coros.values(), return_exceptions=True)
    out = {}
    for key, value in zip(keys, results):
        if isinstance(value, BaseException) and not isinstance(value, KubeError):
            raise value
        out[key] = value
    return out
