"""The PXE/iPXE boot server, a service of the operator process.

What a machine sees
===================

A node is set to boot from the network (IPMI boot device ``network``) and powered on. Its
firmware's PXE client gets an address and a boot file from DHCP (the site's DHCP server,
or dnsmasq, points it here); iPXE then fetches::

    GET /boot.ipxe            the same for everyone: chain to this node's script by MAC
    GET /ipxe/<mac>           the node's script (404 when the node is not being provisioned)

The per-node script boots the deploy ramdisk (kernel + initrd, URLs from the operator's
settings) with the image to write on the kernel command line: ``stratus.image_url``,
``stratus.image_checksum`` (``<type>:<hex>``), root device hints, and the callback URL
with its token. The ramdisk writes the image and reports::

    POST /v1/nodes/<name>/callback?attempt=<n>
    Authorization: Bearer <token>
    {"success": true, "message": "..."}

and, when the node has a user data Secret, reads it (same token) to hand to the image's
first boot::

    GET /v1/nodes/<name>/user-data?attempt=<n>

Design decisions
================

* A machine has no secret of its own when it PXE-boots, so the per-node script (which
  carries the attempt's token) is handed out once per provisioning attempt and the token
  is bound to whoever received it: the first ``GET /ipxe/<mac>`` of an attempt claims it
  for the requester's address; the same address may fetch it again (iPXE retries), the
  callback and user data are answered only to that address, and a fetch from any other
  address voids the attempt (its token is refused from then on, the controller is told
  through ``on_refetch`` and starts over with a new token). Knowing a MAC address is
  therefore not enough: whoever races the real machine for the script gets a token that
  dies when the machine asks for its script. Where the provisioning network is not
  isolated, ``BootConfig.allowed_sources`` (the node's known provisioning addresses)
  restricts the script to them outright.

* The script table is in memory and rebuilt by the controller: every reconcile of a node
  waiting for its callback registers its script again (idempotent), so an operator
  restart loses nothing a machine needs.
* Per-node tokens are HMAC-SHA256 over (node UID, provisioning attempt) with a key from
  ``STRATUS_BOOTSERVER_KEY`` (the chart fills it from a Secret), or a random key per
  process when unset (a restart then invalidates tokens handed out before it, and the
  attempt times out and is retried). A token is good for one node and one attempt
  only; a late callback of an earlier attempt is refused. Tokens are compared in constant
  time, and neither tokens nor keys are logged.
* The callback is recorded in the node's ``status.bootCallback`` (through the
  ``on_callback`` hook the controller installs), so it survives restarts; the controller
  is woken at once.
* HTTP is aiohttp on the operator's event loop (kopf already depends on it); TFTP
  (``STRATUS_BOOTSERVER_TFTP_PORT``, off by default) serves iPXE binaries for networks whose
  PXE firmware needs to chain-load iPXE first: ``undionly.kpxe`` (legacy) and
  ``ipxe.efi`` (UEFI) from ``STRATUS_BOOTSERVER_TFTP_ROOT`` (Debian's ``ipxe`` package
  carries them) through PyPI ``tftpy``, in a thread; it is optional and imported lazily.
* Everything listens on 127.0.0.1 unless ``STRATUS_BOOTSERVER_BIND`` says otherwise;
  the URL put into scripts is ``STRATUS_BOOTSERVER_URL`` (default from bind and port).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import threading
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

MAC = re.compile(r"^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$")


def normalize_mac(mac: str) -> str:
    mac = mac.strip().lower().replace("-", ":")
    if not MAC.match(mac):
        raise ValueError(f"not a MAC address: {mac[:32]!r}")
    return mac


@dataclasses.dataclass(frozen=True)
class Settings:
    bind: str = "127.0.0.1"
    http_port: int = 8089  # 0: no boot server
    public_url: str = ""  # what scripts point at; default http://bind:port
    tftp_port: int = 0  # 0: no TFTP
    tftp_root: str = "/usr/lib/ipxe"
    deploy_kernel: str = ""  # URL of the deploy ramdisk's kernel; default <public_url>/deploy/vmlinuz
    deploy_initrd: str = ""
    key: bytes = b""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        key = env.get("STRATUS_BOOTSERVER_KEY", "").encode() or secrets.token_bytes(32)
        return cls(
            bind=env.get("STRATUS_BOOTSERVER_BIND", "127.0.0.1"),
            http_port=int(env.get("STRATUS_BOOTSERVER_HTTP_PORT", "8089")),
            public_url=env.get("STRATUS_BOOTSERVER_URL", "").rstrip("/"),
            tftp_port=int(env.get("STRATUS_BOOTSERVER_TFTP_PORT", "0")),
            tftp_root=env.get("STRATUS_BOOTSERVER_TFTP_ROOT", "/usr/lib/ipxe"),
            deploy_kernel=env.get("STRATUS_DEPLOY_KERNEL_URL", ""),
            deploy_initrd=env.get("STRATUS_DEPLOY_INITRD_URL", ""),
            key=key,
        )


@dataclasses.dataclass(frozen=True)
class BootConfig:
    """What one node boots for one provisioning attempt."""

    node: str
    uid: str
    mac: str
    attempt: int
    image_url: str
    checksum: str = ""
    checksum_type: str = "sha256"
    uefi: bool = True
    root_hints: dict[str, Any] = dataclasses.field(default_factory=dict)
    user_data: bool = False  # the node has a user data Secret, served to its ramdisk
    served_to: str = ""  # the address this attempt's script went to ("" until fetched)
    voided: bool = False  # a second address asked for the script: the attempt's token is dead
    allowed_sources: tuple[str, ...] = ()  # CIDRs the script may be served to (empty: any)


@dataclasses.dataclass(frozen=True)
class Report:
    node: str
    attempt: int
    success: bool
    message: str = ""


def make_token(key: bytes, uid: str, attempt: int) -> str:
    return hmac.new(key, f"{uid}:{attempt}".encode(), hashlib.sha256).hexdigest()


def render_script(cfg: BootConfig, base_url: str, kernel: str, initrd: str, token: str) -> str:
    """The node's iPXE script (pure)."""
    callback = f"{base_url}/v1/nodes/{quote(cfg.node)}/callback?attempt={cfg.attempt}"
    args = [
        f"stratus.node={cfg.node}",
        f"stratus.image_url={cfg.image_url}",
    ]
    if cfg.checksum:
        args.append(f"stratus.image_checksum={cfg.checksum_type}:{cfg.checksum}")
    for key, value in sorted(cfg.root_hints.items()):
        if value is not None:
            args.append(f"stratus.root_{key}={str(value).replace(' ', '_')}")
    if cfg.user_data:
        args.append(f"stratus.user_data_url={base_url}/v1/nodes/{quote(cfg.node)}/user-data?attempt={cfg.attempt}")
    args += [f"stratus.callback_url={callback}", f"stratus.token={token}", f"stratus.boot_mode={'uefi' if cfg.uefi else 'bios'}",
             "BOOTIF=01-" + cfg.mac.replace(":", "-"), "initrd=initrd"]
    return "\n".join([
        "#!ipxe",
        f"# Stratus: provisioning {cfg.node}, attempt {cfg.attempt}",
        f"kernel --name vmlinuz {kernel} {' '.join(args)}",
        f"initrd --name initrd {initrd}",
        "boot",
        "",
    ])


def _in_any(address: str, cidrs: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(c, strict=False) for c in cidrs)


CHAIN_SCRIPT = "#!ipxe\n# Stratus: fetch this machine's script by its MAC address\nchain {base}/ipxe/${{net0/mac}}\n"


class BootServer:
    """The HTTP (and optional TFTP) endpoints; one per operator process."""

    def __init__(self, settings: Settings, on_callback: Callable[[Report], Awaitable[bool]] | None = None,
                 user_data: Callable[[str], Awaitable[str | None]] | None = None,
                 on_refetch: Callable[[str, int, str, str], Awaitable[None]] | None = None):
        self.settings = settings
        self.on_callback = on_callback
        self.user_data = user_data
        self.on_refetch = on_refetch
        self._configs: dict[str, BootConfig] = {}  # by MAC
        self._by_node: dict[str, str] = {}  # node -> MAC
        self._runner: Any = None
        self._tftp: Any = None
        self._tftp_thread: threading.Thread | None = None
        self.port = 0
        self.tftp_port = 0
        self.requests = 0

    # -- the table ----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return self.settings.public_url or f"http://{self.settings.bind}:{self.port or self.settings.http_port}"

    def token(self, uid: str, attempt: int) -> str:
        return make_token(self.settings.key, uid, attempt)

    def register(self, cfg: BootConfig) -> None:
        """Add or refresh a node's attempt. Registering the same attempt again (every
        reconcile does) keeps who claimed its script and whether it was voided."""
        mac = normalize_mac(cfg.mac)
        old = self._by_node.get(cfg.node)
        previous = self._configs.get(old) if old else None
        if previous and (previous.uid, previous.attempt) == (cfg.uid, cfg.attempt) and not cfg.served_to:
            cfg = dataclasses.replace(cfg, served_to=previous.served_to, voided=previous.voided or cfg.voided)
        if old and old != mac:
            self._configs.pop(old, None)
        self._configs[mac] = dataclasses.replace(cfg, mac=mac)
        self._by_node[cfg.node] = mac

    def unregister(self, node: str) -> None:
        mac = self._by_node.pop(node, None)
        if mac:
            self._configs.pop(mac, None)

    def config_for(self, node: str) -> BootConfig | None:
        mac = self._by_node.get(node)
        return self._configs.get(mac) if mac else None

    def claim(self, mac: str, source: str) -> tuple[BootConfig | None, str]:
        """Who may have this MAC's script: (config, "") when ``source`` may, else
        (config or None, why not). The first fetch of an attempt claims it for ``source``."""
        mac = normalize_mac(mac)
        cfg = self._configs.get(mac)
        if cfg is None:
            return None, "no provisioning for this machine"
        if cfg.voided:
            return cfg, "this provisioning attempt was voided"
        if cfg.allowed_sources and not _in_any(source, cfg.allowed_sources):
            return cfg, "not from the machine's provisioning address"
        if not cfg.served_to:
            cfg = dataclasses.replace(cfg, served_to=source)
            self._configs[mac] = cfg
            return cfg, ""
        if cfg.served_to == source:
            return cfg, ""
        self._configs[mac] = dataclasses.replace(cfg, voided=True)
        return cfg, "the script of this attempt went to another address; the attempt is voided"

    def script_for(self, mac: str) -> str | None:
        cfg = self._configs.get(normalize_mac(mac))
        if cfg is None:
            return None
        base = self.base_url
        kernel = self.settings.deploy_kernel or f"{base}/deploy/vmlinuz"
        initrd = self.settings.deploy_initrd or f"{base}/deploy/initrd"
        return render_script(cfg, base, kernel, initrd, self.token(cfg.uid, cfg.attempt))

    # -- HTTP --------------------------------------------------------------------------
    def _app(self) -> Any:
        from aiohttp import web

        async def chain(request: web.Request) -> web.Response:
            self.requests += 1
            return web.Response(text=CHAIN_SCRIPT.format(base=self.base_url), content_type="text/plain")

        async def script(request: web.Request) -> web.Response:
            self.requests += 1
            source = request.remote or ""
            try:
                cfg, refused = self.claim(request.match_info["mac"], source)
            except ValueError:
                return web.Response(status=400, text="not a MAC address\n")
            if refused:
                if cfg is not None and cfg.served_to and cfg.served_to != source and self.on_refetch is not None:
                    log.warning("node %s attempt %d: script asked for by %s after %s; attempt voided",
                                cfg.node, cfg.attempt, source, cfg.served_to)
                    await self.on_refetch(cfg.node, cfg.attempt, cfg.served_to, source)
                # The same answer whatever the reason: nothing here tells a prober which MACs are known.
                return web.Response(status=404, text="#!ipxe\necho no provisioning for this machine; booting locally\nexit 1\n",
                                    content_type="text/plain")
            return web.Response(text=self.script_for(request.match_info["mac"]) or "", content_type="text/plain")

        def authorized(request: web.Request) -> tuple[BootConfig | None, web.Response | None]:
            node = request.match_info["node"]
            cfg = self.config_for(node)
            try:
                attempt = int(request.query.get("attempt", ""))
            except ValueError:
                return None, web.json_response({"error": "attempt must be a number"}, status=400)
            auth = request.headers.get("Authorization", "")
            given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            bound = cfg is not None and not cfg.voided and cfg.served_to != "" and cfg.served_to == (request.remote or "")
            if cfg is None or cfg.attempt != attempt or not bound or not hmac.compare_digest(given, self.token(cfg.uid, attempt)):
                log.warning("request of node %s attempt %s refused (no such provisioning or bad token)", node, attempt)
                return None, web.json_response({"error": "unknown node, stale attempt or bad token"}, status=403)
            return cfg, None

        async def user_data(request: web.Request) -> web.Response:
            self.requests += 1
            cfg, refused = authorized(request)
            if refused is not None:
                return refused
            assert cfg is not None
            text = await self.user_data(cfg.node) if (cfg.user_data and self.user_data) else None
            if text is None:
                return web.Response(status=404, text="no user data\n")
            return web.Response(text=text, content_type="text/plain")

        async def callback(request: web.Request) -> web.Response:
            self.requests += 1
            cfg, refused = authorized(request)
            if refused is not None:
                return refused
            assert cfg is not None
            node, attempt = cfg.node, cfg.attempt
            try:
                payload = await request.json()
            except Exception:  # noqa: BLE001 - an empty or non-JSON body means success
                payload = {}
            report = Report(node, attempt, bool(payload.get("success", True)), str(payload.get("message", ""))[:1024])
            recorded = await self.on_callback(report) if self.on_callback else True
            if not recorded:
                return web.json_response({"error": "node is gone"}, status=410)
            log.info("boot callback from node %s, attempt %d: %s", node, attempt, "success" if report.success else "failure")
            return web.json_response({"accepted": True})

        async def healthz(request: web.Request) -> web.Response:
            return web.Response(text="ok\n")

        app = web.Application()
        app.router.add_get("/boot.ipxe", chain)
        app.router.add_get("/ipxe/{mac}", script)
        app.router.add_post("/v1/nodes/{node}/callback", callback)
        app.router.add_get("/v1/nodes/{node}/user-data", user_data)
        app.router.add_get("/healthz", healthz)
        return app

    async def start(self) -> None:
        from aiohttp import web

        if self.settings.http_port:
            runner = web.AppRunner(self._app(), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self.settings.bind, self.settings.http_port)
            await site.start()
            self._runner = runner
            self.port = runner.addresses[0][1]
            log.info("boot server: HTTP on %s:%d", self.settings.bind, self.port)
        if self.settings.tftp_port:
            self._start_tftp()

    def _start_tftp(self) -> None:
        try:
            import tftpy
        except ImportError:
            log.error("boot server: TFTP requested but the tftpy package is not installed")
            return
        server = tftpy.TftpServer(self.settings.tftp_root)
        self._tftp = server
        self.tftp_port = self.settings.tftp_port
        thread = threading.Thread(target=server.listen, args=(self.settings.bind, self.settings.tftp_port),
                                  name="tftp", daemon=True)
        thread.start()
        self._tftp_thread = thread
        log.info("boot server: TFTP on %s:%d from %s", self.settings.bind, self.settings.tftp_port, self.settings.tftp_root)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tftp is not None:
            self._tftp.stop(now=True)
            await asyncio.to_thread(self._tftp_thread.join, 5)  # type: ignore[union-attr]
            self._tftp = None
