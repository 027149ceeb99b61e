"""The dashboard's routes: every page reads Stratus kinds, every action is one API call,
all made with the signed-in user's token (stratus.drivers.userkube), so the API server's
RBAC, admission policies and quota decide. The dashboard has no authorisation rules of
its own: it hides a button only when a SelfSubjectAccessReview says the user may not use
it, and forwards every change anyway for the API server to judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pathlib
import re
import secrets
import time
import typing as t
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ...drivers.userkube import Cluster, KubeError, UserKube, gather_dict
from . import present
from .security import (SESSION_COOKIE, SIGNIN_COOKIE, CredentialError, SecurityHeaders, Session, SessionStore,
                       parse_credential, same, service_account_namespace, signin_csrf)

log = logging.getLogger("stratus.dashboard")
HERE = pathlib.Path(__file__).parent
NS_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
NAME_RE = present.NAME_RE
LIVE_KINDS = ("servers", "volumes", "images", "databases")
PERMISSION_TTL = 30.0
KEEPALIVE_SECONDS = 15.0


class Settings:
    def __init__(self, cluster: Cluster, *, tls: bool = False, lifetime: float = 8 * 3600, idle: float = 3600,
                 discover: t.Callable[[str, list[str]], list[str]] | None = None, secret: bytes | None = None,
                 page_size: int = present.PAGE_SIZE):
        self.cluster = cluster
        self.page_size = page_size
        self.tls = tls
        self.sessions = SessionStore(lifetime=lifetime, idle=idle)
        self.discover = discover
        self.secret = secret or secrets.token_bytes(32)


def discover_with_own_credentials(username: str, groups: list[str]) -> list[str]:
    """Project namespaces naming this user (or one of its groups) as a member, read with
    the dashboard's own credentials. Only a hint for the project switcher: each is then
    checked as the user before it is offered, and a user can open any project by URL."""
    from ...drivers import kube

    try:
        items = kube.custom().list_cluster_custom_object("stratus.dev", "v1alpha1", "projects")["items"]
    except Exception as exc:  # noqa: BLE001 - no permission, no CRD: no hint
        log.info("project discovery unavailable: %s", getattr(exc, "reason", exc))
        return []
    sa_ns = service_account_namespace(username)
    out = []
    for p in items:
        ns = (p.get("status") or {}).get("namespace") or (p.get("spec") or {}).get("namespace") or p["metadata"]["name"]
        for m in (p.get("spec") or {}).get("members") or []:
            kind = m.get("kind", "User")
            if (kind == "User" and m.get("name") == username) or (kind == "Group" and m.get("name") in groups) or \
                    (kind == "ServiceAccount" and sa_ns and m.get("name") == f"{sa_ns}/{username.split(':')[-1]}"):
                out.append(ns)
                break
    return out


def create_app(settings: Settings) -> Starlette:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.autoescape = True
    rows_module = None

    def rows():
        nonlocal rows_module
        if rows_module is None:
            rows_module = templates.env.get_template("_rows.html").module
        return rows_module

    sessions = settings.sessions

    # --- helpers ------------------------------------------------------------------
    def cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(name, value, max_age=max_age, httponly=True, secure=settings.tls, samesite="strict", path="/")

    def kube_for(session: Session) -> UserKube:
        return UserKube(settings.cluster, session.token)

    async def permissions(session: Session, ns: str | None, checks: list[tuple[str, str]]) -> dict[str, bool]:
        """{"create servers": True, ...}, asked of the API server, remembered briefly."""
        now = time.monotonic()
        kube = kube_for(session)
        out, todo = {}, []
        for verb, resource in checks:
            key = (verb, resource, ns or "")
            hit = session.cache.get(key)
            if hit and now - hit[1] < PERMISSION_TTL:
                out[f"{verb} {resource}"] = hit[0]
            else:
                todo.append((verb, resource, key))
        if todo:
            answers = await asyncio.gather(*(kube.can(v, r, ns) for v, r, _ in todo), return_exceptions=True)
            for (verb, resource, key), allowed in zip(todo, answers):
                ok = allowed is True
                session.cache[key] = (ok, now)
                out[f"{verb} {resource}"] = ok
        return out

    async def admin_nav(session: Session) -> dict[str, bool]:
        perms = await permissions(session, None, [("list", "baremetalnodes"), ("list", "consolidationplans"),
                                                  ("list", "catalogs")])
        return {"baremetal": perms["list baremetalnodes"], "plans": perms["list consolidationplans"],
                "catalog": perms["list catalogs"]}

    async def render(request: Request, template: str, session: Session | None, status_code: int = 200, **ctx) -> Response:
        base = {"session": session, "csrf": session.csrf if session else "", "project": ctx.get("ns", ""),
                "flash": [], "admin": {}}
        if session:
            base["flash"], session.flash = session.flash, []
            base["admin"] = await admin_nav(session)
            base["projects"] = session.projects
        base.update(ctx)
        return templates.TemplateResponse(request, template, base, status_code=status_code)

    def to_signin(request: Request, note: str = "") -> Response:
        params = []
        if request.method == "GET" and request.url.path != "/":
            params.append("next=" + quote(request.url.path))
        if note:
            params.append("note=" + note)
        return RedirectResponse("/signin" + ("?" + "&".join(params) if params else ""), 303)

    def paged(request: Request) -> dict[str, str]:
        """The LIST parameters of this page of a list (``?continue=`` from the last one)."""
        return present.page_params(request.query_params, settings.page_size)

    def page(handler):
        """Signed-in pages: the session, CSRF on every POST, API refusals as pages."""

        async def endpoint(request: Request) -> Response:
            session = sessions.get(request.cookies.get(SESSION_COOKIE))
            if session is None:
                if request.method != "GET":
                    return Response("Your sign-in has ended; sign in again.", 401, media_type="text/plain")
                return to_signin(request)
            ns = request.path_params.get("ns")
            if ns is not None and not NS_RE.match(ns):
                return await render(request, "error.html", session, 404, title="Not found", message="No such project.")
            name = request.path_params.get("name")
            if name is not None and not NAME_RE.match(name):
                return await render(request, "error.html", session, 404, title="Not found", message="No such object.")
            form: dict = {}
            if request.method == "POST":
                origin = request.headers.get("origin")
                if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
                    return Response("Cross-origin request refused.", 403, media_type="text/plain")
                raw = await request.form()
                form = {k: raw.get(k) for k in raw.keys()}
                if not same(form.get("csrf") or request.headers.get("x-csrf-token"), session.csrf):
                    return Response("The form's CSRF token is missing or wrong; reload the page and try again.", 403,
                                    media_type="text/plain")
            if ns:
                session.project = ns
            try:
                return await handler(request, session, kube_for(session), form)
            except KubeError as exc:
                if exc.code == 401:
                    sessions.delete(session.sid)
                    return to_signin(request, "expired")
                if exc.code == 410 and request.query_params.get("continue"):
                    # The API server keeps a list snapshot for a few minutes; start again.
                    session.flash.append(("error", "That page of the list has expired; here is the first page again."))
                    return RedirectResponse(request.url.path, 303)
                title = {403: "Not allowed", 404: "Not found"}.get(exc.code, "The API server refused")
                return await render(request, "error.html", session, exc.code if exc.code >= 400 else 502,
                                    title=title, message=exc.message, ns=ns or "")

        return endpoint

    async def refused(request, session, exc: KubeError, redisplay) -> Response:
        """The page again with the API server's refusal on it; when the user may not even
        read that page (another project), the refusal alone, with its own status."""
        if exc.code == 401:
            raise exc
        try:
            return await redisplay()
        except KubeError:
            return await render(request, "error.html", session, exc.code, title="The API server refused",
                                message=exc.message, ns=request.path_params.get("ns", ""))

    def done(session: Session, message: str, target: str) -> Response:
        session.flash.append(("ok", message))
        return RedirectResponse(target, 303)

    # --- sign-in ------------------------------------------------------------------
    async def signin_page(request: Request, error: str = "", status_code: int = 200) -> Response:
        nonce = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
        note = request.query_params.get("note", "")
        info = {"expired": "Your sign-in has ended (expired, revoked or signed out); sign in again.",
                "out": "You are signed out."}.get(note, "")
        response = templates.TemplateResponse(request, "signin.html", {
            "session": None, "csrf": signin_csrf(settings.secret, nonce), "error": error, "info": info,
            "next": request.query_params.get("next", ""), "flash": [], "admin": {}}, status_code=status_code)
        cookie(response, SIGNIN_COOKIE, nonce, max_age=3600)
        return response

    async def signin(request: Request) -> Response:
        if request.method == "GET":
            if sessions.get(request.cookies.get(SESSION_COOKIE)):
                return RedirectResponse("/", 303)
            return await signin_page(request)
        raw = await request.form()
        nonce = request.cookies.get(SIGNIN_COOKIE)
        if not nonce or not same(raw.get("csrf"), signin_csrf(settings.secret, nonce)):
            return Response("The sign-in form's CSRF token is missing or wrong; reload the page.", 403, media_type="text/plain")
        text = raw.get("credential") or ""
        upload = raw.get("kubeconfig_file")
        if upload is not None and hasattr(upload, "read"):
            data = await upload.read()
            if data:
                text = data.decode("utf-8", "replace")
        try:
            cred = parse_credential(str(text))
        except CredentialError as exc:
            return await signin_page(request, str(exc), 400)
        kube = UserKube(settings.cluster, cred.token)
        try:
            who = await kube.whoami()
        except KubeError as exc:
            msg = "The API server did not accept this token (expired, revoked or not a token of this cluster)." \
                if exc.code == 401 else f"The sign-in could not be checked: {exc.message}"
            return await signin_page(request, msg, exc.code if exc.code in (401, 403, 503) else 502)
        candidates = [c for c in (service_account_namespace(who["username"]), cred.namespace) if c]
        if settings.discover:
            candidates += await run_in_threadpool(settings.discover, who["username"], who["groups"])
        projects = []
        for ns in dict.fromkeys(candidates):
            if NS_RE.match(ns):
                try:
                    if await kube.can("list", "servers", ns):
                        projects.append(ns)
                except KubeError:
                    pass
        session = sessions.create(cred.token, who["username"], who["groups"], projects)
        log.info("sign-in of %s (%d projects)", who["username"], len(projects))
        nxt = raw.get("next") or ""
        target = nxt if nxt.startswith("/p/") or nxt.startswith("/admin/") else (
            f"/p/{projects[0]}/" if projects else "/projects")
        response = RedirectResponse(target, 303)
        cookie(response, SESSION_COOKIE, session.sid)
        response.delete_cookie(SIGNIN_COOKIE, path="/")
        return response

    async def signout(request: Request) -> Response:
        session = sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is not None:
            raw = await request.form()
            if not same(raw.get("csrf"), session.csrf):
                return Response("CSRF token missing or wrong.", 403, media_type="text/plain")
            sessions.delete(session.sid)
            log.info("sign-out of %s", session.username)
        response = RedirectResponse("/signin?note=out", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def home(request: Request) -> Response:
        session = sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return RedirectResponse("/signin", 303)
        return RedirectResponse(f"/p/{session.project}/" if session.project else "/projects", 303)

    @page
    async def projects_page(request, session, kube, form):
        return await render(request, "projects.html", session)

    @page
    async def switch(request, session, kube, form):
        ns = request.query_params.get("project", "")
        if not NS_RE.match(ns):
            return RedirectResponse("/projects", 303)
        return RedirectResponse(f"/p/{ns}/", 303)

    # --- overview -----------------------------------------------------------------
    @page
    async def overview(request, session, kube, form):
        ns = request.path_params["ns"]
        got = await gather_dict(
            quota=kube.get("resourcequotas", "stratus-quota", ns, group="", version="v1"),
            events=kube.list("events", ns, group="", version="v1", limit=200),
            servers=kube.list("servers", ns),
        )
        if isinstance(got["servers"], KubeError):
            raise got["servers"]
        quota = None if isinstance(got["quota"], KubeError) else got["quota"]
        events = [] if isinstance(got["events"], KubeError) else got["events"]["items"]
        phases: dict[str, int] = {}
        for s in got["servers"]["items"]:
            ph = present.server_row(s)["phase"]
            phases[ph] = phases.get(ph, 0) + 1
        return await render(request, "overview.html", session, ns=ns, bars=present.quota_bars(quota),
                            events=present.recent_events(events), phases=sorted(phases.items()),
                            servers=len(got["servers"]["items"]))

    # --- servers ------------------------------------------------------------------
    SERVER_CHECKS = [("create", "servers"), ("patch", "servers"), ("delete", "servers")]

    async def servers_page(request, session, kube, ns, error="", status_code=200):
        got = await gather_dict(servers=kube.list("servers", ns, **paged(request)), flavors=kube.list("flavors"),
                                images=kube.list("images", ns))
        if isinstance(got["servers"], KubeError):
            raise got["servers"]
        listing = got["servers"]
        can = await permissions(session, ns, SERVER_CHECKS)
        items = sorted(listing["items"], key=lambda s: s["metadata"]["name"])

        def names(key):
            return [] if isinstance(got[key], KubeError) else sorted(o["metadata"]["name"] for o in got[key]["items"])

        return await render(request, "servers.html", session, status_code, ns=ns, can=can, error=error,
                            servers=[present.server_row(s) for s in items], flavors=names("flavors"),
                            images=names("images"), rv=listing["metadata"].get("resourceVersion", ""),
                            paging=present.pager(listing, [s["metadata"]["name"] for s in items], request.query_params))

    @page
    async def servers(request, session, kube, form):
        ns = request.path_params["ns"]
        if request.method == "POST":
            return await launch(request, session, kube, form, ns)
        return await servers_page(request, session, kube, ns)

    async def launch_choices(kube: UserKube, ns: str) -> dict:
        got = await gather_dict(flavors=kube.list("flavors"), images=kube.list("images", ns),
                                volumes=kube.list("volumes", ns), keypairs=kube.list("keypairs", ns),
                                groups=kube.list("servergroups", ns),
                                networks=kube.list("network-attachment-definitions", ns, group="k8s.cni.cncf.io", version="v1"))

        def names(key, ok=lambda o: True):
            v = got[key]
            return [] if isinstance(v, KubeError) else sorted(o["metadata"]["name"] for o in v["items"] if ok(o))

        flavors = [] if isinstance(got["flavors"], KubeError) else sorted(
            ({"name": f["metadata"]["name"], "vcpus": f["spec"].get("vcpus"), "ram": f["spec"].get("ram"),
              "disk": f["spec"].get("disk", "")} for f in got["flavors"]["items"]
             if (f.get("spec") or {}).get("isPublic", True) or ns in (f["spec"].get("projects") or [])),
            key=lambda f: (f["vcpus"] or 0, f["name"]))
        return {"flavors": flavors,
                "images": names("images", lambda o: (o.get("status") or {}).get("phase") == "active"),
                "volumes": names("volumes", lambda o: not (o.get("spec") or {}).get("attachTo")),
                "keypairs": names("keypairs"), "groups": names("groups"),
                "networks": None if isinstance(got["networks"], KubeError) else names("networks")}

    async def launch_form(request, session, kube, ns, values=None, errors=None, status_code=200):
        return await render(request, "server_new.html", session, status_code, ns=ns, values=values or {"source": "image"},
                            errors=errors or {}, choices=await launch_choices(kube, ns))

    @page
    async def server_new(request, session, kube, form):
        return await launch_form(request, session, kube, request.path_params["ns"])

    async def launch(request, session, kube, form, ns):
        body, errors = present.server_from_form(form)
        if errors:
            return await launch_form(request, session, kube, ns, form, errors, 422)
        try:
            await kube.create("servers", body, ns)
        except KubeError as exc:
            if exc.code == 401:
                raise
            errors = present.api_field_errors(exc.field_errors())
            errors[""] = exc.message
            return await launch_form(request, session, kube, ns, form, errors, exc.code)
        return done(session, f"Server {body['metadata']['name']} is being launched.", f"/p/{ns}/servers")

    @page
    async def server_detail(request, session, kube, form):
        ns, name = request.path_params["ns"], request.path_params["name"]
        got = await gather_dict(server=kube.get("servers", name, ns), flavors=kube.list("flavors"),
                                images=kube.list("images", ns))
        if isinstance(got["server"], KubeError):
            raise got["server"]
        server = got["server"]
        can = await permissions(session, ns, SERVER_CHECKS)

        def names(key):
            return [] if isinstance(got[key], KubeError) else sorted(o["metadata"]["name"] for o in got[key]["items"])

        return await render(request, "server.html", session, ns=ns, can=can, server=server, row=present.server_row(server),
                            flavors=names("flavors"), images=names("images"),
                            rv=server["metadata"].get("resourceVersion", ""), error="")

    @page
    async def server_action(request, session, kube, form):
        ns, name = request.path_params["ns"], request.path_params["name"]
        action = form.get("action", "")
        change = present.SERVER_ACTIONS.get(action)
        if change is None:
            return await servers_page(request, session, kube, ns, f"Unknown action {action!r}.", 400)
        try:
            if change == "delete":
                await kube.delete("servers", name, ns)
            else:
                if action == "migrate" and form.get("node"):
                    change = {"metadata": {"annotations": {"stratus.dev/migrate": form["node"]}}}
                elif action in ("resize", "rebuild"):
                    field, value = ("flavor", form.get("flavor")) if action == "resize" else ("image", form.get("image"))
                    if not value or not NAME_RE.match(value):
                        return await servers_page(request, session, kube, ns, f"Choose the {field} to {action} to.", 422)
                    change = {"spec": {field: value}}
                await kube.patch("servers", name, change, ns)
        except KubeError as exc:
            return await refused(request, session, exc,
                                 lambda: servers_page(request, session, kube, ns, exc.message, exc.code))
        return done(session, f"{action.capitalize()} requested for server {name}.", f"/p/{ns}/servers")

    # --- live updates ---------------------------------------------------------------
    async def events(request: Request) -> Response:
        session = sessions.get(request.cookies.get(SESSION_COOKIE))
        ns, kind = request.path_params["ns"], request.path_params["kind"]
        if session is None:
            return Response("event: signin\ndata: {}\n\n", 200, media_type="text/event-stream")
        if kind not in LIVE_KINDS or not NS_RE.match(ns):
            return Response("not found", 404, media_type="text/plain")
        rv = request.query_params.get("rv", "")
        if not rv.isdigit():
            return Response("rv must be the list's resourceVersion", 400, media_type="text/plain")
        only = request.query_params.get("name") or None  # one object's page
        if only is not None and not NAME_RE.match(only):
            return Response("no such object", 404, media_type="text/plain")
        kube = kube_for(session)
        checks = {"servers": SERVER_CHECKS, "volumes": VOLUME_CHECKS, "images": IMAGE_CHECKS,
                  "databases": DATABASE_CHECKS}[kind]
        can = await permissions(session, ns, checks)
        macro = getattr(rows(), kind[:-1] + "_row")
        to_row = present.ROWS[kind]

        async def stream():
            queue: asyncio.Queue = asyncio.Queue()

            async def pump():
                version = rv
                try:
                    while True:
                        async for ev in kube.watch(kind, ns, version, name=only):
                            obj = ev.get("object") or {}
                            if ev.get("type") == "ERROR":
                                await queue.put(("reload" if obj.get("code") == 410 else "failed", {"message": obj.get("message", "")}))
                                return
                            version = (obj.get("metadata") or {}).get("resourceVersion") or version
                            if ev.get("type") == "BOOKMARK":
                                continue
                            name = obj["metadata"]["name"]
                            if ev["type"] == "DELETED":
                                await queue.put(("gone", {"name": name}))
                            else:
                                html = str(macro(to_row(obj), ns, session.csrf, can))
                                await queue.put(("row", {"name": name, "html": html}))
                except KubeError as exc:
                    await queue.put(("signin" if exc.code == 401 else "failed", {"message": exc.message}))
                except Exception as exc:  # noqa: BLE001 - the page is told and may reconnect
                    log.warning("watch of %s in %s ended: %s", kind, ns, exc)
                    await queue.put(("failed", {"message": "the live update stream ended"}))

            task = asyncio.create_task(pump())
            try:
                yield "retry: 3000\n\n"
                while True:
                    try:
                        event, data = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                    except asyncio.TimeoutError:
                        if not sessions.alive(session):
                            yield "event: signin\ndata: {}\n\n"
                            return
                        yield ": keepalive\n\n"
                        continue
                    if not sessions.alive(session):
                        yield "event: signin\ndata: {}\n\n"
                        return
                    yield f"event: {event}\ndata: {json.dumps(data)}\n\n"
                    if event in ("reload", "failed", "signin"):
                        return
            finally:
                task.cancel()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no"})

    # --- flavors, key pairs -----------------------------------------------------------
    @page
    async def flavors(request, session, kube, form):
        ns = request.path_params["ns"]
        listing = await kube.list("flavors")
        items = sorted(listing["items"], key=lambda f: (f["spec"].get("vcpus", 0), f["metadata"]["name"]))
        return await render(request, "flavors.html", session, ns=ns, flavors=items)

    KEYPAIR_CHECKS = [("create", "keypairs"), ("delete", "keypairs")]

    async def keypairs_page(request, session, kube, ns, values=None, errors=None, status_code=200):
        listing = await kube.list("keypairs", ns)
        can = await permissions(session, ns, KEYPAIR_CHECKS)
        return await render(request, "keypairs.html", session, status_code, ns=ns, can=can,
                            keypairs=sorted(listing["items"], key=lambda k: k["metadata"]["name"]),
                            values=values or {}, errors=errors or {})

    @page
    async def keypairs(request, session, kube, form):
        return await simple_create(request, session, kube, form, "keypairs", present.keypair_from_form, keypairs_page,
                                   "Key pair {name} imported.")

    async def simple_create(request, session, kube, form, plural, from_form, redisplay, done_message):
        """GET shows the page; POST creates the object the form describes, or shows the page
        again with the form's errors, then the API server's by field."""
        ns = request.path_params["ns"]
        if request.method != "POST":
            return await redisplay(request, session, kube, ns)
        body, errors = from_form(form)
        if errors:
            return await redisplay(request, session, kube, ns, form, errors, 422)
        try:
            await kube.create(plural, body, ns)
        except KubeError as exc:
            errors = present.api_field_errors(exc.field_errors())
            errors[""] = exc.message
            return await refused(request, session, exc,
                                 lambda: redisplay(request, session, kube, ns, form, errors, exc.code))
        return done(session, done_message.format(name=body["metadata"]["name"]), f"/p/{ns}/{plural}")

    async def simple_delete(request, session, kube, plural, label, redisplay, back=None):
        ns, name = request.path_params["ns"], request.path_params["name"]
        try:
            await kube.delete(plural, name, ns)
        except KubeError as exc:
            return await refused(request, session, exc,
                                 lambda: redisplay(request, session, kube, ns, errors={"": exc.message}, status_code=exc.code))
        return done(session, f"{label} {name} deleted.", f"/p/{ns}/{back or plural}")

    @page
    async def keypair_delete(request, session, kube, form):
        return await simple_delete(request, session, kube, "keypairs", "Key pair", keypairs_page)

    # --- volumes --------------------------------------------------------------------
    VOLUME_CHECKS = [("create", "volumes"), ("patch", "volumes"), ("delete", "volumes")]

    async def volumes_page(request, session, kube, ns, values=None, errors=None, status_code=200):
        got = await gather_dict(volumes=kube.list("volumes", ns, **paged(request)), servers=kube.list("servers", ns),
                                types=kube.list("volumetypes"), images=kube.list("images", ns))
        if isinstance(got["volumes"], KubeError):
            raise got["volumes"]
        can = await permissions(session, ns, VOLUME_CHECKS)

        def names(key):
            return [] if isinstance(got[key], KubeError) else sorted(o["metadata"]["name"] for o in got[key]["items"])

        items = sorted(got["volumes"]["items"], key=lambda v: v["metadata"]["name"])
        return await render(request, "volumes.html", session, status_code, ns=ns, can=can, errors=errors or {},
                            values=values or {}, volumes=[present.volume_row(v) for v in items],
                            rv=got["volumes"]["metadata"].get("resourceVersion", ""), servers=names("servers"),
                            types=names("types"), images=names("images"),
                            paging=present.pager(got["volumes"], [v["metadata"]["name"] for v in items], request.query_params))

    @page
    async def volumes(request, session, kube, form):
        return await simple_create(request, session, kube, form, "volumes", present.volume_from_form, volumes_page,
                                   "Volume {name} is being created.")

    @page
    async def volume_action(request, session, kube, form):
        ns, name = request.path_params["ns"], request.path_params["name"]
        action = form.get("action", "")
        try:
            if action == "delete":
                await kube.delete("volumes", name, ns)
            elif action == "attach":
                server = (form.get("server") or "").strip()
                if not NAME_RE.match(server):
                    return await volumes_page(request, session, kube, ns, errors={"": "Choose a server to attach to."},
                                              status_code=422)
                await kube.patch("volumes", name, {"spec": {"attachTo": server}}, ns)
            elif action == "detach":
                await kube.patch("volumes", name, {"spec": {"attachTo": None}}, ns)
            elif action == "extend":
                size = (form.get("size") or "").strip()
                size = size + "Gi" if size.isdigit() else size
                if not present.SIZE_RE.match(size):
                    return await volumes_page(request, session, kube, ns, errors={"": "A new size such as 20Gi."},
                                              status_code=422)
                await kube.patch("volumes", name, {"spec": {"size": size}}, ns)
            else:
                return await volumes_page(request, session, kube, ns, errors={"": f"Unknown action {action!r}."},
                                          status_code=400)
        except KubeError as exc:
            return await refused(request, session, exc,
                                 lambda: volumes_page(request, session, kube, ns, errors={"": exc.message}, status_code=exc.code))
        return done(session, f"{action.capitalize()} requested for volume {name}.", f"/p/{ns}/volumes")

    # --- images ---------------------------------------------------------------------
    IMAGE_CHECKS = [("create", "images"), ("delete", "images")]

    async def images_page(request, session, kube, ns, values=None, errors=None, status_code=200):
        listing = await kube.list("images", ns, **paged(request))
        can = await permissions(session, ns, IMAGE_CHECKS)
        items = sorted(listing["items"], key=lambda v: v["metadata"]["name"])
        return await render(request, "images.html", session, status_code, ns=ns, can=can, errors=errors or {},
                            values=values or {"diskFormat": "qcow2"}, images=[present.image_row(i) for i in items],
                            rv=listing["metadata"].get("resourceVersion", ""),
                            paging=present.pager(listing, [i["metadata"]["name"] for i in items], request.query_params))

    @page
    async def images(request, session, kube, form):
        return await simple_create(request, session, kube, form, "images", present.image_from_form, images_page,
                                   "Image {name} is being imported.")

    @page
    async def image_delete(request, session, kube, form):
        return await simple_delete(request, session, kube, "images", "Image", images_page)

    # --- buckets --------------------------------------------------------------------
    BUCKET_CHECKS = [("create", "buckets"), ("delete", "buckets")]

    async def buckets_page(request, session, kube, ns, values=None, errors=None, status_code=200):
        got = await gather_dict(buckets=kube.list("buckets", ns), classes=kube.list("bucketclasses"))
        if isinstance(got["buckets"], KubeError):
            raise got["buckets"]
        can = await permissions(session, ns, BUCKET_CHECKS)
        items = sorted(got["buckets"]["items"], key=lambda v: v["metadata"]["name"])
        classes = [] if isinstance(got["classes"], KubeError) else sorted(c["metadata"]["name"] for c in got["classes"]["items"])
        return await render(request, "buckets.html", session, status_code, ns=ns, can=can, errors=errors or {},
                            values=values or {}, buckets=[present.bucket_row(b) for b in items], classes=classes)

    @page
    async def buckets(request, session, kube, form):
        return await simple_create(request, session, kube, form, "buckets", present.bucket_from_form, buckets_page,
                                   "Bucket {name} is being created.")

    @page
    async def bucket_delete(request, session, kube, form):
        return await simple_delete(request, session, kube, "buckets", "Bucket", buckets_page)

    # --- databases ------------------------------------------------------------------
    DATABASE_CHECKS = [("create", "databases"), ("delete", "databases")]

    async def databases_page(request, session, kube, ns, values=None, errors=None, status_code=200):
        got = await gather_dict(databases=kube.list("databases", ns, **paged(request)),
                                backups=kube.list("databasebackups", ns),
                                flavors=kube.list("flavors"))
        if isinstance(got["databases"], KubeError):
            raise got["databases"]
        can = await permissions(session, ns, DATABASE_CHECKS)
        items = sorted(got["databases"]["items"], key=lambda d: d["metadata"]["name"])
        backups = [] if isinstance(got["backups"], KubeError) else [
            {"name": b["metadata"]["name"], "database": b["spec"].get("database", ""),
             "phase": (b.get("status") or {}).get("phase") or "Pending", "size": (b.get("status") or {}).get("sizeBytes"),
             "ended": (b.get("status") or {}).get("endTime", "")}
            for b in sorted(got["backups"]["items"], key=lambda b: b["metadata"].get("creationTimestamp", ""), reverse=True)]
        flavors = [] if isinstance(got["flavors"], KubeError) else sorted(f["metadata"]["name"] for f in got["flavors"]["items"])
        return await render(request, "databases.html", session, status_code, ns=ns, can=can, errors=errors or {},
                            values=values or {}, databases=[present.database_row(d) for d in items], backups=backups,
                            flavors=flavors, engines=present.DATABASE_ENGINES,
                            rv=got["databases"]["metadata"].get("resourceVersion", ""),
                            paging=present.pager(got["databases"], [d["metadata"]["name"] for d in items],
                                                 request.query_params))

    @page
    async def databases(request, session, kube, form):
        return await simple_create(request, session, kube, form, "databases", present.database_from_form, databases_page,
                                   "Database {name} is being created.")

    @page
    async def database_delete(request, session, kube, form):
        return await simple_delete(request, session, kube, "databases", "Database", databases_page)

    # --- data processing --------------------------------------------------------------
    DATA_CHECKS = [("delete", "dataclusters"), ("delete", "datajobs")]

    async def dataprocessing_page(request, session, kube, ns, values=None, errors=None, status_code=200):
        got = await gather_dict(clusters=kube.list("dataclusters", ns), jobs=kube.list("datajobs", ns))
        for key in ("clusters", "jobs"):
            if isinstance(got[key], KubeError):
                raise got[key]
        can = await permissions(session, ns, DATA_CHECKS)
        clusters = sorted(got["clusters"]["items"], key=lambda c: c["metadata"]["name"])
        jobs = sorted(got["jobs"]["items"], key=lambda j: j["metadata"].get("creationTimestamp", ""), reverse=True)
        return await render(request, "dataprocessing.html", session, status_code, ns=ns, can=can, errors=errors or {},
                            clusters=[present.datacluster_row(c) for c in clusters],
                            jobs=[present.datajob_row(j) for j in jobs])

    @page
    async def dataprocessing(request, session, kube, form):
        return await dataprocessing_page(request, session, kube, request.path_params["ns"])

    @page
    async def datacluster_delete(request, session, kube, form):
        return await simple_delete(request, session, kube, "dataclusters", "Cluster", dataprocessing_page,
                                   back="dataprocessing")

    @page
    async def datajob_delete(request, session, kube, form):
        return await simple_delete(request, session, kube, "datajobs", "Job", dataprocessing_page, back="dataprocessing")

    # --- stacks ---------------------------------------------------------------------
    async def stacks_page(request, session, kube, ns, values=None, errors=None, status_code=200):
        listing = await kube.list("stacks", ns)
        can = await permissions(session, ns, [("delete", "stacks")])
        items = sorted(listing["items"], key=lambda v: v["metadata"]["name"])
        return await render(request, "stacks.html", session, status_code, ns=ns, can=can, errors=errors or {},
                            stacks=[present.stack_row(i) for i in items])

    @page
    async def stacks(request, session, kube, form):
        return await stacks_page(request, session, kube, request.path_params["ns"])

    @page
    async def stack_delete(request, session, kube, form):
        return await simple_delete(request, session, kube, "stacks", "Stack", stacks_page)

    # --- admin ----------------------------------------------------------------------
    @page
    async def admin_baremetal(request, session, kube, form):
        listing = await kube.list("baremetalnodes")
        return await render(request, "admin_baremetal.html", session, nodes=sorted(listing["items"], key=lambda n: n["metadata"]["name"]))

    @page
    async def admin_plans(request, session, kube, form):
        if request.method == "POST":
            name = (form.get("name") or "").strip()
            if not NAME_RE.match(name):
                return RedirectResponse("/admin/plans", 303)
            try:
                await kube.patch("consolidationplans", name, {"spec": {"approved": True}})
            except KubeError as exc:
                if exc.code == 401:
                    raise
                session.flash.append(("error", exc.message))
                return RedirectResponse("/admin/plans", 303)
            return done(session, f"Plan {name} approved.", "/admin/plans")
        listing = await kube.list("consolidationplans")
        can = await permissions(session, None, [("patch", "consolidationplans")])
        items = sorted(listing["items"], key=lambda n: n["metadata"].get("creationTimestamp", ""), reverse=True)
        return await render(request, "admin_plans.html", session, plans=items, can=can)

    @page
    async def admin_catalog(request, session, kube, form):
        listing = await kube.list("catalogs")
        return await render(request, "admin_catalog.html", session, catalogs=listing["items"])

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "sessions": len(sessions)})

    async def not_found(request: Request, exc) -> Response:
        session = sessions.get(request.cookies.get(SESSION_COOKIE))
        return await render(request, "error.html", session, 404, title="Not found", message="There is no such page.")

    routes = [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/signin", signin, methods=["GET", "POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/projects", projects_page),
        Route("/switch", switch),
        Route("/p/{ns}/", overview),
        Route("/p/{ns}/servers", servers, methods=["GET", "POST"]),
        Route("/p/{ns}/servers/new", server_new),
        Route("/p/{ns}/servers/{name}/action", server_action, methods=["POST"]),
        Route("/p/{ns}/{kind}/events", events),
        Route("/p/{ns}/servers/{name}", server_detail),
        Route("/p/{ns}/flavors", flavors),
        Route("/p/{ns}/keypairs", keypairs, methods=["GET", "POST"]),
        Route("/p/{ns}/keypairs/{name}/delete", keypair_delete, methods=["POST"]),
        Route("/p/{ns}/volumes", volumes, methods=["GET", "POST"]),
        Route("/p/{ns}/volumes/{name}/action", volume_action, methods=["POST"]),
        Route("/p/{ns}/images", images, methods=["GET", "POST"]),
        Route("/p/{ns}/images/{name}/delete", image_delete, methods=["POST"]),
        Route("/p/{ns}/buckets", buckets, methods=["GET", "POST"]),
        Route("/p/{ns}/buckets/{name}/delete", bucket_delete, methods=["POST"]),
        Route("/p/{ns}/databases", databases, methods=["GET", "POST"]),
        Route("/p/{ns}/databases/{name}/delete", database_delete, methods=["POST"]),
        Route("/p/{ns}/dataprocessing", dataprocessing),
        Route("/p/{ns}/dataclusters/{name}/delete", datacluster_delete, methods=["POST"]),
        Route("/p/{ns}/datajobs/{name}/delete", datajob_delete, methods=["POST"]),
        Route("/p/{ns}/stacks", stacks),
        Route("/p/{ns}/stacks/{name}/delete", stack_delete, methods=["POST"]),
        Route("/admin/baremetal", admin_baremetal),
        Route("/admin/plans", admin_plans, methods=["GET", "POST"]),
        Route("/admin/catalog", admin_catalog),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await settings.cluster.close()

    app = Starlette(routes=routes, exception_handlers={404: not_found}, lifespan=lifespan)
    app.state.settings = settings
    return SecurityHeaders(app, tls=settings.tls)
