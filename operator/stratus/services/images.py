"""The image service: streams an image's bytes over HTTP to callers allowed to see it.

    GET|HEAD /v2/images/{namespace}/{name}/file     the bytes (Range: one byte range)
    PUT      /v2/images/{namespace}/{name}/file     upload the bytes of an `upload` Image
                                                    (callers allowed to `update` it)
    GET      /healthz

It runs inside the operator process (started by a kopf startup handler, stopped on
cleanup) and listens on STRATUS_IMAGE_SERVICE_HOST (127.0.0.1) and
STRATUS_IMAGE_SERVICE_PORT (0: a free port picked by the kernel; the chart sets 9292,
Glance's port). STRATUS_IMAGE_SERVICE_URL overrides the URL written into image status
(a Service's address, say); otherwise it is http://HOST:PORT.

Callers prove who they are, before anything is looked up, in one of two ways
(TokenReview and SubjectAccessReview answers are cached by drivers.access):

Bearer token
    Validated with a TokenReview against the API server. The image is visible to the
    caller when (core.image.visible_to) it is public, or the caller belongs to one of
    the projects (namespaces) that may see it: the image's own and, if shared, those in
    sharedWith. Belonging is being a ServiceAccount of that namespace, or being allowed
    to `get images` there (a SubjectAccessReview), so project members' RBAC decides.

Signed URL (`?uid=…&expires=…&signature=…`)
    For CDI importer pods, which hold no token. The signature is an HMAC-SHA256 of
    namespace, name, uid and expiry with a key derived from the image store's admin
    secret (nothing new to store, and it rotates with that secret). It grants reading
    one image's bytes until it expires (STRATUS_IMAGE_URL_TTL seconds, 7 days), and a
    recreated image of the same name gets a new uid, so old URLs die with the old
    image (the uid rides in the URL so the signature is checked before the lookup).
    The Image's status holds the signed URL, like a presigned S3 URL; only those
    who can read the Image see it.

Bytes come from the image store through a short-lived presigned S3 URL, fetched with
aiohttp and relayed chunk by chunk: nothing is buffered. Responses carry the sha256 in
`X-Image-Checksum-Sha256`, an ETag of it, and `Accept-Ranges: bytes`. A deactivated
image answers 403, one not yet active 409. Tokens and signatures are never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator

from aiohttp import ClientSession, ClientTimeout, web

from ..api.registry import API_VERSION, GROUP
from ..core.image import visible_to
from ..drivers import access, kube, stores

log = logging.getLogger(__name__)

#: (namespace, name, chunks, total) -> (HTTP status, reason, message): stores an upload.
Upload = Callable[[str, str, Iterator[bytes], "int | None"], "tuple[int, str, str]"]
UPLOAD = web.AppKey("upload", Callable)
URL_TTL = int(os.environ.get("STRATUS_IMAGE_URL_TTL", str(7 * 24 * 3600)))
CHUNK = 1024 * 1024
_state: dict[str, str] = {}


# -- pure helpers ------------------------------------------------------------------------------


class Unsatisfiable(ValueError):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range, None for the whole body.

    Multiple ranges and unknown units are ignored (the whole body is served, as RFC
    9110 allows); a range that starts past the end raises :class:`Unsatisfiable`."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    spec = header[len("bytes="):].strip()
    first_s, sep, last_s = spec.partition("-")
    if not sep:
        return None
    try:
        if first_s == "":
            suffix = int(last_s)
            first, last = max(0, size - suffix), size - 1
            if suffix <= 0:
                first = size  # an empty suffix range cannot be satisfied
        else:
            first = int(first_s)
            last = int(last_s) if last_s else size - 1
    except ValueError:
        return None
    if first >= size:
        raise Unsatisfiable(header)
    if first < 0 or last < first:
        return None
    return first, min(last, size - 1)


def sign(key: bytes, namespace: str, name: str, uid: str, expires: int) -> str:
    msg = f"{namespace}\0{name}\0{uid}\0{expires}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def verify(key: bytes, namespace: str, name: str, uid: str, expires: str, signature: str, now: float) -> bool:
    if not expires.isdigit() or int(expires) < now:
        return False
    return hmac.compare_digest(sign(key, namespace, name, uid, int(expires)), signature)


def derive_key(admin_secret: str) -> bytes:
    return hmac.new(admin_secret.encode(), b"stratus-image-url-v1", hashlib.sha256).digest()


def serviceaccount_namespace(username: str) -> str | None:
    parts = username.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        return parts[2]
    return None


# -- URLs ------------------------------------------------------------------------------------


def base_url() -> str:
    return _state.get("base", "")


def image_url(namespace: str, name: str) -> str:
    base = base_url()
    if not base:
        return ""
    return f"{base}/v2/images/{urllib.parse.quote(namespace)}/{urllib.parse.quote(name)}/file"


def _signing_key() -> bytes:
    return derive_key(stores.image_signing_secret())


def signed_url(namespace: str, name: str, uid: str, now: float | None = None) -> str:
    expires = int((now or time.time()) + URL_TTL)
    signature = sign(_signing_key(), namespace, name, uid, expires)
    return f"{image_url(namespace, name)}?uid={uid}&expires={expires}&signature={signature}"


def needs_resign(url: str, namespace: str, name: str, now: float | None = None) -> bool:
    """True when a signed URL points elsewhere or has less than half its life left."""
    if not url or not url.startswith(image_url(namespace, name) + "?"):
        return True
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    expires = (query.get("expires") or ["0"])[0]
    return "uid" not in query or not expires.isdigit() or int(expires) - (now or time.time()) < URL_TTL / 2


# -- authorization -------------------------------------------------------------------------------


def _may(caller: access.Caller, namespace: str, name: str | None, verb: str) -> bool:
    return access.allowed(caller, verb, group=GROUP, resource="images", namespace=namespace, name=name or "")


def authorized(caller: access.Caller, image: dict) -> bool:
    spec, meta = image["spec"], image["metadata"]
    if spec.get("visibility") == "public":
        return True
    candidates = [meta["namespace"]] + (list(spec.get("sharedWith") or []) if spec.get("visibility") == "shared" else [])
    sa_ns = serviceaccount_namespace(caller.username)
    if sa_ns and visible_to(meta["namespace"], spec.get("visibility", "private"), spec.get("sharedWith"), sa_ns):
        return True
    for ns in candidates:
        if _may(caller, ns, meta["name"] if ns == meta["namespace"] else None, "get"):
            return True
    return False


async def _caller(request: web.Request) -> access.Caller | web.Response:
    """The authenticated caller of a bearer-token request, or the 401 to answer."""
    token = access.bearer_token(request.headers.get("Authorization"))
    if token is None:
        return web.json_response({"reason": "Unauthorized", "message": "send a Kubernetes bearer token"}, status=401,
                                 headers={"WWW-Authenticate": "Bearer"})
    caller = await asyncio.to_thread(access.authenticate, token)
    if caller is None:
        return _error(401, "Unauthorized", "the token was not accepted by the API server")
    return caller


# -- the handler --------------------------------------------------------------------------------


def _get_image(namespace: str, name: str) -> dict | None:
    return kube.get(API_VERSION, "images", name, namespace)


def _error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"reason": reason, "message": message}, status=status)


async def image_file(request: web.Request) -> web.StreamResponse:
    # The caller proves who they are (a signature over the Image's uid, or a bearer token)
    # before anything is looked up, so an unauthenticated caller learns nothing.
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    query = request.query
    caller = None
    if "signature" in query:
        key = await asyncio.to_thread(_signing_key)
        if not verify(key, namespace, name, query.get("uid", ""), query.get("expires", ""), query["signature"], time.time()):
            return _error(403, "InvalidSignature", "the signed URL is invalid or expired; read a fresh one from the Image's status")
    else:
        caller = await _caller(request)
        if isinstance(caller, web.Response):
            return caller
    image = await asyncio.to_thread(_get_image, namespace, name)
    if image is None:
        return _error(404, "NotFound", f"no image {namespace}/{name}")
    if caller is None and image["metadata"]["uid"] != query.get("uid"):
        # Signed for an Image of this name that has since been deleted and recreated.
        return _error(403, "InvalidSignature", "the signed URL is for an image that no longer exists; read a fresh one")
    if caller is not None and not await asyncio.to_thread(authorized, caller, image):
        # Same answer as a missing image: do not reveal what exists elsewhere.
        return _error(404, "NotFound", f"no image {namespace}/{name}")
    status = image.get("status") or {}
    if status.get("phase") == "deactivated":
        return _error(403, "ImageDeactivated", "the image is deactivated; an administrator must reactivate it")
    if status.get("phase") != "active" or not status.get("location"):
        return _error(409, "ImageNotActive", f"the image is {status.get('phase') or 'queued'}, not active")
    size, checksum = int(status["size"]), status["checksum"]
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{checksum}"', "X-Image-Checksum-Sha256": checksum,
               "Content-Type": "application/octet-stream"}
    try:
        rng = parse_range(request.headers.get("Range"), size)
    except Unsatisfiable:
        return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    if rng and request.headers.get("If-Range") not in (None, headers["ETag"]):
        rng = None
    first, last = rng or (0, size - 1)
    length = last - first + 1 if size else 0
    headers["Content-Length"] = str(length)
    code = 206 if rng else 200
    if rng:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    if request.method == "HEAD":
        return web.Response(status=code, headers=headers)

    store = await asyncio.to_thread(stores.image_store)
    url = await asyncio.to_thread(store.presigned_get_url, status["location"]["bucket"], status["location"]["key"], expires_in=300)
    upstream_headers = {"Range": f"bytes={first}-{last}"} if rng else {}
    async with ClientSession(timeout=ClientTimeout(total=None, sock_read=60)) as session:
        async with session.get(url, headers=upstream_headers) as upstream:
            if upstream.status not in (200, 206):
                log.warning("image store answered %s for %s/%s", upstream.status, namespace, name)
                return _error(502, "ImageStoreError", "the image store could not serve the bytes; try again")
            response = web.StreamResponse(status=code, headers=headers)
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response


async def image_upload(request: web.Request) -> web.Response:
    """PUT the bytes of an Image whose source is `upload` (streamed, never buffered)."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    caller = await _caller(request)
    if isinstance(caller, web.Response):
        return caller
    if not await asyncio.to_thread(_may, caller, namespace, name, "update"):
        return _error(403, "Forbidden", f"you may not update image {namespace}/{name}")
    loop = asyncio.get_running_loop()

    def chunks():
        while True:
            chunk = asyncio.run_coroutine_threadsafe(request.content.read(CHUNK), loop).result()
            if not chunk:
                return
            yield chunk

    total = request.content_length
    code, reason, message = await asyncio.to_thread(request.app[UPLOAD], namespace, name, chunks(), total)
    return web.json_response({"reason": reason, "message": message}, status=code)


def _no_uploads(namespace: str, name: str, chunks, total: int | None) -> tuple[int, str, str]:
    return 503, "UploadsUnavailable", "this image service takes no uploads"


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def make_app(upload: Upload | None = None) -> web.Application:
    """The service's routes. ``upload`` stores the bytes of an upload Image (the Image
    controller's ``run_upload``, handed in by whoever starts the service, so that this
    module needs no controller); without it uploads are refused."""
    app = web.Application()
    app[UPLOAD] = upload or _no_uploads
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v2/images/{namespace}/{name}/file", image_file)
    app.router.add_put("/v2/images/{namespace}/{name}/file", image_upload)
    return app


async def start_from_env(logger=log, upload: Upload | None = None) -> web.AppRunner | None:
    host = os.environ.get("STRATUS_IMAGE_SERVICE_HOST", "127.0.0.1")
    port = int(os.environ.get("STRATUS_IMAGE_SERVICE_PORT", "0"))
    if port < 0:
        logger.info("image service disabled (STRATUS_IMAGE_SERVICE_PORT < 0)")
        return None
    runner = web.AppRunner(make_app(upload), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        logger.error("image service could not listen on %s:%s: %s", host, port, exc)
        await runner.cleanup()
        return None
    actual = runner.addresses[0][1] if runner.addresses else port
    _state["base"] = os.environ.get("STRATUS_IMAGE_SERVICE_URL") or f"http://{host}:{actual}"
    logger.info("image service listening on %s", _state["base"])
    return runner
