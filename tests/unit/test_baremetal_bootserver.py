"""The boot server: scripts per MAC, per-node per-attempt tokens, the callback endpoint."""

from __future__ import annotations

import asyncio
import json
import http.client
import urllib.parse

import pytest

from stratus.dev.run import free_port
from stratus.services import bootserver as bs

CFG = bs.BootConfig(node="bm0", uid="uid-1", mac="52:54:00:AA:bb:01", attempt=2, image_url="http://img/disk.img",
                    checksum="ab12", root_hints={"deviceName": "/dev/sda", "rotational": False})


@pytest.mark.parametrize(
    "mac, expected",
    [("52:54:00:aa:bb:01", "52:54:00:aa:bb:01"), ("52-54-00-AA-BB-01", "52:54:00:aa:bb:01"), (" 52:54:00:aa:bb:01 ", "52:54:00:aa:bb:01")],
    ids=["colons", "dashes-upper", "spaces"],
)
def test_normalize_mac(mac, expected):
    assert bs.normalize_mac(mac) == expected


@pytest.mark.parametrize("mac", ["", "52:54:00:aa:bb", "zz:54:00:aa:bb:01", "../../etc/passwd"])
def test_normalize_mac_refuses(mac):
    with pytest.raises(ValueError):
        bs.normalize_mac(mac)


def test_tokens_are_per_node_and_attempt():
    key = b"k"
    assert bs.make_token(key, "u1", 1) == bs.make_token(key, "u1", 1)
    assert len({bs.make_token(key, "u1", 1), bs.make_token(key, "u1", 2), bs.make_token(key, "u2", 1),
                bs.make_token(b"other", "u1", 1)}) == 4


def test_script_boots_the_deploy_ramdisk_with_image_and_callback():
    script = bs.render_script(CFG, "http://boot:8089", "http://k/vmlinuz", "http://k/initrd", "TOKEN")
    lines = script.splitlines()
    assert lines[0] == "#!ipxe" and lines[-1] == "boot"
    kernel = next(line for line in lines if line.startswith("kernel "))
    assert "http://k/vmlinuz" in kernel
    assert "stratus.image_url=http://img/disk.img" in kernel
    assert "stratus.image_checksum=sha256:ab12" in kernel
    assert "stratus.root_deviceName=/dev/sda" in kernel and "stratus.root_rotational=False" in kernel
    assert "stratus.callback_url=http://boot:8089/v1/nodes/bm0/callback?attempt=2" in kernel
    assert "stratus.token=TOKEN" in kernel and "stratus.boot_mode=uefi" in kernel
    assert "initrd --name initrd http://k/initrd" in lines


def test_table_register_replace_unregister():
    server = bs.BootServer(bs.Settings(key=b"k", public_url="http://boot"))
    server.register(CFG)
    assert server.script_for("52:54:00:aa:bb:01") is not None
    moved = bs.BootConfig(**{**CFG.__dict__, "mac": "52:54:00:aa:bb:02", "attempt": 3})
    server.register(moved)  # a new MAC for the same node replaces the old entry
    assert server.script_for("52:54:00:aa:bb:01") is None
    assert "attempt=3" in server.script_for("52:54:00:AA:BB:02")
    server.unregister("bm0")
    assert server.script_for("52:54:00:aa:bb:02") is None
    assert server.config_for("bm0") is None


def _call(method: str, url: str, token: str | None = None, body: dict | None = None, source: str = "127.0.0.1") -> tuple[int, str]:
    """An HTTP request from the loopback address ``source`` (a second address plays another machine)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5, source_address=(source, 0))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=data, headers=headers)
        rsp = conn.getresponse()
        return rsp.status, rsp.read().decode()
    finally:
        conn.close()


def test_http_endpoints_and_callback_authentication():
    reports: list[bs.Report] = []

    async def on_callback(report: bs.Report) -> bool:
        reports.append(report)
        return True

    async def main() -> None:
        server = bs.BootServer(bs.Settings(http_port=free_port(), key=b"key"), on_callback=on_callback)
        await server.start()
        base = server.base_url
        try:
            server.register(CFG)
            call = lambda *a, **kw: asyncio.to_thread(_call, *a, **kw)  # noqa: E731
            code, text = await call("GET", f"{base}/boot.ipxe")
            assert code == 200 and f"chain {base}/ipxe/${{net0/mac}}" in text
            code, text = await call("GET", f"{base}/ipxe/52-54-00-aa-bb-01")
            assert code == 200 and "stratus.token=" + server.token("uid-1", 2) in text
            assert (await call("GET", f"{base}/ipxe/52:54:00:aa:bb:09"))[0] == 404
            assert (await call("GET", f"{base}/ipxe/not-a-mac"))[0] == 400
            url = f"{base}/v1/nodes/bm0/callback"
            good = server.token("uid-1", 2)
            assert (await call("POST", f"{url}?attempt=2", "bad", {"success": True}))[0] == 403
            assert (await call("POST", f"{url}?attempt=1", server.token("uid-1", 1), {}))[0] == 403  # stale attempt
            assert (await call("POST", f"{url}?attempt=2", None, {}))[0] == 403  # no token
            assert (await call("POST", f"{base}/v1/nodes/other/callback?attempt=2", good, {}))[0] == 403
            assert (await call("POST", f"{url}?attempt=x", good, {}))[0] == 400
            assert not reports
            assert (await call("POST", f"{url}?attempt=2", good, {"success": False, "message": "disk not found"}))[0] == 200
            assert reports == [bs.Report("bm0", 2, False, "disk not found")]
        finally:
            await server.stop()

    asyncio.run(main())


def test_user_data_is_served_to_the_node_with_its_token_only():
    async def source(node: str) -> str | None:
        return f"#cloud-config\nhostname: {node}\n"

    async def main() -> None:
        server = bs.BootServer(bs.Settings(http_port=free_port(), key=b"key"), user_data=source)
        await server.start()
        try:
            cfg = bs.BootConfig(**{**CFG.__dict__, "user_data": True})
            server.register(cfg)
            call = lambda *a: asyncio.to_thread(_call, *a)  # noqa: E731
            code, script = await call("GET", f"{server.base_url}/ipxe/{cfg.mac}")  # the machine fetches its script
            url = f"{server.base_url}/v1/nodes/bm0/user-data?attempt=2"
            assert code == 200 and f"stratus.user_data_url={url}" in script
            assert (await call("GET", url, "wrong"))[0] == 403
            code, text = await call("GET", url, server.token("uid-1", 2))
            assert code == 200 and text == "#cloud-config\nhostname: bm0\n"
            server.register(CFG)  # no user data Secret: nothing to serve, and no URL in the script
            assert "user_data_url" not in server.script_for(CFG.mac)
            assert (await call("GET", url, server.token("uid-1", 2)))[0] == 404
        finally:
            await server.stop()

    asyncio.run(main())


def test_the_token_is_bound_to_the_address_that_fetched_the_script_and_a_second_address_voids_it():
    """Knowing a MAC is not enough: the callback is refused from any other address than the
    one the script went to, and a second address asking for the script kills the attempt's
    token (the controller is told and starts over)."""
    reports: list[bs.Report] = []
    refetches: list[tuple] = []

    async def on_callback(report: bs.Report) -> bool:
        reports.append(report)
        return True

    async def on_refetch(node: str, attempt: int, first: str, second: str) -> None:
        refetches.append((node, attempt, first, second))

    async def main() -> None:
        server = bs.BootServer(bs.Settings(http_port=free_port(), key=b"key"), on_callback=on_callback, on_refetch=on_refetch)
        await server.start()
        base = server.base_url
        call = lambda *a, **kw: asyncio.to_thread(_call, *a, **kw)  # noqa: E731
        try:
            server.register(CFG)
            url = f"{base}/v1/nodes/bm0/callback?attempt=2"
            token = server.token("uid-1", 2)
            # before anyone fetched the script, the token opens nothing
            assert (await call("POST", url, token, {}))[0] == 403
            code, text = await call("GET", f"{base}/ipxe/{CFG.mac}", source="127.0.0.1")
            assert code == 200 and f"stratus.token={token}" in text
            server.register(CFG)  # a reconcile registers the attempt again: the claim stays
            assert (await call("GET", f"{base}/ipxe/{CFG.mac}", source="127.0.0.1"))[0] == 200  # iPXE retries
            assert (await call("POST", url, token, {}, source="127.0.0.3"))[0] == 403  # the token, from elsewhere
            assert not reports
            # another machine asks for the script: the attempt is voided, for everyone
            code, text = await call("GET", f"{base}/ipxe/{CFG.mac}", source="127.0.0.3")
            assert code == 404 and "stratus.token" not in text
            assert refetches == [("bm0", 2, "127.0.0.1", "127.0.0.3")]
            assert (await call("POST", url, token, {}, source="127.0.0.1"))[0] == 403
            assert (await call("GET", f"{base}/ipxe/{CFG.mac}", source="127.0.0.1"))[0] == 404
            assert not reports
            # the next attempt starts clean
            server.register(bs.BootConfig(**{**CFG.__dict__, "attempt": 3}))
            assert (await call("GET", f"{base}/ipxe/{CFG.mac}", source="127.0.0.1"))[0] == 200
            assert (await call("POST", f"{base}/v1/nodes/bm0/callback?attempt=3", server.token("uid-1", 3), {}))[0] == 200
            assert reports == [bs.Report("bm0", 3, True, "")]
        finally:
            await server.stop()

    asyncio.run(main())


def test_allowed_sources_restrict_the_script_to_the_provisioning_address():
    async def main() -> None:
        server = bs.BootServer(bs.Settings(http_port=free_port(), key=b"key"))
        await server.start()
        call = lambda *a, **kw: asyncio.to_thread(_call, *a, **kw)  # noqa: E731
        try:
            server.register(bs.BootConfig(**{**CFG.__dict__, "allowed_sources": ("127.0.0.5/32",)}))
            assert (await call("GET", f"{server.base_url}/ipxe/{CFG.mac}", source="127.0.0.1"))[0] == 404
            assert (await call("GET", f"{server.base_url}/ipxe/{CFG.mac}", source="127.0.0.5"))[0] == 200
        finally:
            await server.stop()

    asyncio.run(main())
