"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, against
`stratus dashboard` as a real process, on the real API server with the operator running.
Users sign in with the kubeconfig of a real AccessToken the operator issued, so every
refusal below is the API server's own (RBAC, quota), never the dashboard's.

Screenshots of the main pages go to docs/screenshots/ (linked from the README).
"""

from __future__ import annotations

import base64
import html
import json
import os
import pathlib
import re
import subprocess
import sys
import urllib.request
import uuid

import pytest
from playwright.sync_api import expect

from .identity import *  # noqa: F401,F403  (fixtures)
from .kube import wait_for
from .test_images import image_store  # noqa: F401  (fixture: the image store on the session object store)

pytestmark = pytest.mark.integration

REPO = pathlib.Path(__file__).resolve().parents[2]
SHOTS = REPO / "docs" / "screenshots"
CHROMIUM = os.environ.get("STRATUS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
CONTAINER_DISK = "quay.io/containerdisks/fedora:41"


PAGE = 5


@pytest.fixture(scope="module")
def dashboard(kube, operator, stratus_roles, tmp_path_factory):
    """`stratus dashboard` on a free port, configured with the test cluster's kubeconfig
    (for the API server's address and CA, and the project-switcher hint only)."""
    from stratus.dev.run import free_port

    port = free_port()
    log = open(tmp_path_factory.mktemp("dashboard") / "dashboard.log", "ab")
    # Five rows per page, so that a handful of objects already makes a second page.
    proc = subprocess.Popen([sys.executable, "-m", "stratus", "dashboard", "--port", str(port), "--page-size", str(PAGE)],
                            env={**os.environ, "KUBECONFIG": kube.kubeconfig}, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return urllib.request.urlopen(url + "/healthz", timeout=2).status == 200
        except OSError:
            assert proc.poll() is None, f"the dashboard exited: {pathlib.Path(log.name).read_text()}"
            return False

    wait_for(up, 60, what="the dashboard to answer")
    yield url
    proc.terminate()
    proc.wait(20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert pathlib.Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make deps` installs Debian's chromium"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser):
    """A fresh browser context (its own cookies) per user; pages fail the test on any
    Content-Security-Policy violation or script error."""
    contexts = []

    def make():
        context = browser.new_context(viewport={"width": 1360, "height": 860})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.problems = []
        # Script errors and Content-Security-Policy refusals ("Refused to ..."); an answer
        # with an error status (a 403 page) is logged too, and is not a problem here.
        page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
                and page.problems.append(m.text))
        page.on("pageerror", lambda e: page.problems.append(str(e)))
        page.on("dialog", lambda d: d.accept())  # the confirmations of actions
        return page

    yield make
    for context in contexts:
        context.close()


def user(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}@example.org"


def flavor(kube, vcpus=1, ram="1Gi") -> str:
    name = f"f-{uuid.uuid4().hex[:6]}"
    kube.create("flavors", {"kind": "Flavor", "metadata": {"name": name}, "spec": {"vcpus": vcpus, "ram": ram}})
    return name


def server_body(name: str, flavor_name: str) -> dict:
    return {"kind": "Server", "metadata": {"name": name}, "spec": {"flavor": flavor_name, "containerDisk": CONTAINER_DISK}}


def access_token(kube, project: str, member: str) -> str:
    """The kubeconfig of an AccessToken the operator issues for `member` (read by the admin
    client here, as the member would read it with `stratus token issue`)."""
    name = f"dash-{uuid.uuid4().hex[:6]}"
    kube.create("accesstokens", {"kind": "AccessToken", "metadata": {"name": name}, "spec": {"user": member, "ttl": "1h"}},
                project)
    tok = wait_for(lambda: (t := kube.get("accesstokens", name, project)).get("status", {}).get("phase") == "Active" and t,
                   60, what="AccessToken Active")
    secret = kube.core.read_namespaced_secret(tok["status"]["secretName"], project)
    return base64.b64decode(secret.data["kubeconfig"]).decode()


def sign_in(page, dashboard: str, kubeconfig: str, project: str) -> None:
    page.goto(dashboard + "/")
    assert page.url.endswith("/signin")
    page.fill("#credential", kubeconfig)
    page.click("#signin")
    page.wait_for_url(re.compile(rf"/p/{project}/$"))


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def csrf_of(page) -> str:
    return page.get_attribute("form.signout input[name=csrf]", "value")


def phase_cell(page, name: str):
    return page.locator(f'#servers tr[data-name="{name}"] td.phase .badge')


# --- Tests ---------------------------------------------------------------------------


def test_member_launches_a_server_and_sees_it_become_active_live(kube, projects, dashboard, new_page):
    alice = user("alice")
    a = projects([{"name": alice, "role": "member"}], quota={"servers": 5, "vcpus": 8, "memory": "16Gi"})
    f = flavor(kube)
    # Until the quota controller has counted a new quota, the API server refuses creates
    # with "status unknown for quota" (the page shows that too; not what this test is about).
    wait_for(lambda: (q := kube.core.read_namespaced_resource_quota("stratus-quota", a)).status.hard == q.spec.hard
             and set(q.status.used or {}) >= set(q.spec.hard), 60, what="the project's quota counted")
    page = new_page()
    sign_in(page, dashboard, access_token(kube, a, alice), a)
    # The token never reaches the page's script: the session cookie is HttpOnly.
    assert "stratus_session" not in page.evaluate("document.cookie")
    assert page.locator('tr[data-quota="servers"] td.figures').inner_text() == "0 of 5"
    assert a in page.locator("#project-switch option").all_inner_texts()
    page.click('nav.side a[href$="/servers"]')
    page.click("#launch")
    assert f in page.locator("#flavor").inner_text()
    shot(page, "launch-server")
    page.fill("#name", "web-1")
    page.select_option("#flavor", f)
    page.check("#source-containerDisk")
    page.fill("#containerDisk", CONTAINER_DISK)
    page.fill("#userData", "#cloud-config\npackages: [nginx]\n")
    page.click("#launch-submit")
    page.wait_for_url(re.compile(rf"/p/{a}/servers$"))
    assert "web-1 is being launched" in page.inner_text("main")
    page.wait_for_selector('#servers tbody[data-live-state="on"]')
    # Mark this document: if the page reloaded, the mark would be gone.
    page.evaluate("document.body.dataset.mark = 'same-page'")
    expect(phase_cell(page, "web-1")).to_have_text("ACTIVE", timeout=90_000)
    assert page.evaluate("document.body.dataset.mark") == "same-page"
    row = page.locator('#servers tr[data-name="web-1"]')
    node = row.locator("td.node").inner_text()
    assert node and node == kube.get("servers", "web-1", a)["status"]["node"]
    assert row.locator("td.flavor").inner_text() == f
    assert kube.get("servers", "web-1", a)["spec"]["userData"].startswith("#cloud-config")
    shot(page, "servers")
    # Stop it from the page (confirmed), and watch SHUTOFF arrive on the same page.
    row.locator('button[data-action="stop"]').click()
    page.wait_for_url(re.compile(rf"/p/{a}/servers$"))
    page.evaluate("document.body.dataset.mark = 'after-stop'")
    expect(phase_cell(page, "web-1")).to_have_text("SHUTOFF", timeout=90_000)
    assert page.evaluate("document.body.dataset.mark") == "after-stop"
    assert kube.get("servers", "web-1", a)["spec"]["powerState"] == "Stopped"
    # Resize from the server's own page (written to spec.flavor; effective at its next start).
    bigger = flavor(kube, vcpus=2, ram="2Gi")
    page.click('#servers tr[data-name="web-1"] td.name a')
    page.wait_for_url(re.compile(rf"/p/{a}/servers/web-1$"))
    page.select_option("#resize-flavor", bigger)
    page.click('button[data-action="resize"]')
    page.wait_for_url(re.compile(rf"/p/{a}/servers$"))
    assert kube.get("servers", "web-1", a)["spec"]["flavor"] == bigger
    page.wait_for_selector('#servers tbody[data-live-state="on"]')
    page.evaluate("document.body.dataset.mark = 'after-stop'")
    # A server another client creates appears without a reload too.
    kube.create("servers", server_body("from-cli", f), a)
    page.wait_for_selector('#servers tr[data-name="from-cli"]', timeout=30_000)
    assert page.evaluate("document.body.dataset.mark") == "after-stop"
    page.goto(f"{dashboard}/p/{a}/")
    wait_for(lambda: (page.reload(), page.locator('tr[data-quota="servers"] td.figures').inner_text() == "2 of 5")[1], 30,
             what="quota use 2 of 5 on the overview")
    shot(page, "overview")
    page.goto(f"{dashboard}/p/{a}/flavors")
    shot(page, "flavors")
    assert page.problems == []


def test_quota_refusal_shows_the_api_servers_message(kube, projects, dashboard, new_page):
    alice = user("alice")
    a = projects([{"name": alice, "role": "member"}], quota={"servers": 1})
    f = flavor(kube)
    kube.create("servers", server_body("first", f), a)
    page = new_page()
    sign_in(page, dashboard, access_token(kube, a, alice), a)
    page.goto(f"{dashboard}/p/{a}/servers/new")
    page.fill("#name", "second")
    page.select_option("#flavor", f)
    page.check("#source-containerDisk")
    page.fill("#containerDisk", CONTAINER_DISK)
    page.click("#launch-submit")
    error = page.locator("p.form-error").inner_text()
    assert "exceeded quota: stratus-quota" in error and "count/servers.stratus.dev" in error
    assert page.input_value("#name") == "second"  # the form keeps what was typed
    assert kube.get("servers", "second", a) is None
    shot(page, "quota-refusal")
    # A name the schema refuses is caught before sending, next to its field.
    page.fill("#name", "Not_Valid")
    page.evaluate("document.getElementById('launch-form').noValidate = true")
    page.click("#launch-submit")
    assert "Lower-case letters" in page.locator("#error-name").inner_text()
    assert page.problems == []


def test_member_of_one_project_sees_nothing_of_another(kube, projects, dashboard, new_page):
    alice, bob = user("alice"), user("bob")
    a = projects([{"name": alice, "role": "member"}])
    b = projects([{"name": bob, "role": "member"}])
    f = flavor(kube)
    kube.create("servers", server_body("secret-b", f), b)
    page = new_page()
    sign_in(page, dashboard, access_token(kube, a, alice), a)
    assert page.locator("#project-switch option").all_inner_texts() == [a]
    for path in (f"/p/{b}/", f"/p/{b}/servers", f"/p/{b}/volumes", f"/p/{b}/images", f"/p/{b}/buckets",
                 f"/p/{b}/keypairs", f"/p/{b}/servers/new"):
        response = page.goto(dashboard + path)
        text = page.inner_text("main")
        assert "secret-b" not in page.content(), path
        if path.endswith("/new"):
            # The form itself is only a form; launching is what the API server refuses.
            continue
        assert response.status == 403, path
        assert "forbidden" in text and b in text, path  # the API server's own words
    # The live stream of B's servers is refused too.
    events = page.request.get(f"{dashboard}/p/{b}/servers/events?rv=1")
    assert "secret-b" not in events.text() and "event: row" not in events.text()
    # And a change posted straight at B's URL, with a valid CSRF token, is the API server's to refuse.
    page.goto(f"{dashboard}/p/{a}/servers")
    r = page.request.post(f"{dashboard}/p/{b}/servers/secret-b/action", form={"action": "delete", "csrf": csrf_of(page)})
    assert r.status == 403 and 'cannot delete resource "servers"' in html.unescape(r.text())
    assert kube.get("servers", "secret-b", b) is not None
    shot(page, "forbidden-other-project")


def test_reader_sees_no_action_buttons_and_is_refused_when_posting_anyway(kube, projects, dashboard, new_page):
    carol = user("carol")
    a = projects([{"name": carol, "role": "reader"}])
    f = flavor(kube)
    kube.create("servers", server_body("shared", f), a)
    page = new_page()
    sign_in(page, dashboard, access_token(kube, a, carol), a)
    page.goto(f"{dashboard}/p/{a}/servers")
    page.wait_for_selector('#servers tr[data-name="shared"]')
    assert page.locator("#launch").count() == 0
    assert page.locator("#servers button.action").count() == 0
    for path in ("volumes", "images", "keypairs", "buckets"):
        page.goto(f"{dashboard}/p/{a}/{path}")
        assert page.locator("main form[method=post]").count() == 0, path
    r = page.request.post(f"{dashboard}/p/{a}/servers/shared/action", form={"action": "delete", "csrf": csrf_of(page)})
    assert r.status == 403 and 'cannot delete resource "servers"' in html.unescape(r.text())
    r = page.request.post(f"{dashboard}/p/{a}/servers", form={"csrf": csrf_of(page), "name": "mine", "flavor": f,
                                                                "source": "containerDisk", "containerDisk": CONTAINER_DISK})
    assert r.status == 403 and 'cannot create resource "servers"' in html.unescape(r.text())
    assert kube.get("servers", "shared", a) is not None and kube.get("servers", "mine", a) is None


def test_a_change_without_the_csrf_token_is_refused(kube, projects, dashboard, new_page):
    alice = user("alice")
    a = projects([{"name": alice, "role": "member"}])
    f = flavor(kube)
    kube.create("servers", server_body("keep", f), a)
    page = new_page()
    sign_in(page, dashboard, access_token(kube, a, alice), a)
    r = page.request.post(f"{dashboard}/p/{a}/servers/keep/action", form={"action": "delete"})
    assert r.status == 403 and "CSRF" in html.unescape(r.text())
    r = page.request.post(f"{dashboard}/p/{a}/servers/keep/action", form={"action": "delete", "csrf": "guess"})
    assert r.status == 403
    assert kube.get("servers", "keep", a)["metadata"].get("deletionTimestamp") is None


def test_sign_out_ends_the_sign_in(kube, projects, dashboard, new_page, browser):
    alice = user("alice")
    a = projects([{"name": alice, "role": "member"}])
    page = new_page()
    sign_in(page, dashboard, access_token(kube, a, alice), a)
    cookie = next(c for c in page.context.cookies() if c["name"] == "stratus_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.click("#signout")
    page.wait_for_url(re.compile(r"/signin\?note=out$"))
    assert "signed out" in page.inner_text("main")
    shot(page, "signin")
    page.goto(f"{dashboard}/p/{a}/servers")
    assert "/signin" in page.url
    # The old cookie, replayed by another browser, opens nothing either.
    other = browser.new_context()
    try:
        other.add_cookies([{k: cookie[k] for k in ("name", "value", "domain", "path")}])
        replay = other.new_page()
        replay.goto(f"{dashboard}/p/{a}/servers")
        assert "/signin" in replay.url
    finally:
        other.close()


def test_bad_sign_ins_say_why(dashboard, new_page, kube):
    page = new_page()
    page.goto(dashboard + "/signin")
    page.fill("#credential", "not-a-real-token")
    page.click("#signin")
    assert "did not accept this token" in page.inner_text("p.form-error")
    page.fill("#credential", pathlib.Path(kube.kubeconfig).read_text())
    page.click("#signin")
    assert "Only token kubeconfigs" in page.inner_text("p.form-error")


def test_member_creates_attaches_extends_and_detaches_a_volume(kube, projects, dashboard, new_page):
    alice = user("alice")
    a = projects([{"name": alice, "role": "member"}])
    vt = f"vt-{uuid.uuid4().hex[:6]}"
    kube.create("volumetypes", {"kind": "VolumeType", "metadata": {"name": vt},
                                "spec": {"storageClassName": "standin-csi", "allowExpansion": True, "volumeMode": "Block"}})
    f = flavor(kube)
    kube.create("servers", server_body("app", f), a)
    page = new_page()
    sign_in(page, dashboard, access_token(kube, a, alice), a)
    page.goto(f"{dashboard}/p/{a}/volumes")
    page.fill("#name", "data")
    page.fill("#size", "1Gi")
    wait_for(lambda: (page.reload(), vt in page.locator("#volumeType").inner_text())[1], 30, what="the type offered")
    page.fill("#name", "data")
    page.fill("#size", "1Gi")
    page.select_option("#volumeType", vt)
    page.click("#volume-form button[type=submit]")
    page.wait_for_url(re.compile(rf"/p/{a}/volumes$"))
    page.wait_for_selector('#volumes tbody[data-live-state="on"]')
    page.evaluate("document.body.dataset.mark = 'volumes'")
    cell = '#volumes tr[data-name="data"]'
    expect(page.locator(f"{cell} td.phase .badge")).to_have_text("available", timeout=60_000)
    wait_for(lambda: (kube.get("servers", "app", a).get("status") or {}).get("phase") == "ACTIVE", 60, what="app ACTIVE")
    page.fill(f'{cell} input[name=server]', "app")
    page.click(f'{cell} button[data-action="attach"]')
    page.wait_for_url(re.compile(rf"/p/{a}/volumes$"))
    page.evaluate("document.body.dataset.mark = 'attached'")
    expect(page.locator(f"{cell} td.attached")).to_have_text("app", timeout=60_000)
    assert page.evaluate("document.body.dataset.mark") == "attached"
    assert kube.get("volumes", "data", a)["status"]["attachment"]["server"] == "app"
    shot(page, "volumes")
    # Extend: growing is accepted; shrinking is refused by the API server, in its words.
    page.fill(f'{cell} input[name=size]', "2Gi")
    page.click(f'{cell} button[data-action="extend"]')
    page.wait_for_url(re.compile(rf"/p/{a}/volumes$"))
    assert kube.get("volumes", "data", a)["spec"]["size"] == "2Gi"
    page.fill(f'{cell} input[name=size]', "1Gi")
    page.click(f'{cell} button[data-action="extend"]')
    assert "spec.size" in page.locator("p.form-error").inner_text()
    page.goto(f"{dashboard}/p/{a}/volumes")
    page.click(f'{cell} button[data-action="detach"]')
    page.wait_for_url(re.compile(rf"/p/{a}/volumes$"))
    wait_for(lambda: not (kube.get("volumes", "data", a).get("status") or {}).get("attachment"), 60, what="detached")
    assert kube.get("volumes", "data", a)["spec"].get("attachTo") is None
    assert page.problems == []


def test_member_imports_an_image_and_watches_its_progress(kube, projects, dashboard, new_page, image_store, tmp_path):
    import hashlib
    from .test_images import serve_slowly

    alice = user("alice")
    a = projects([{"name": alice, "role": "member"}])
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "256M"], check=True, capture_output=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x42 0 16M", str(disk)], check=True, capture_output=True)
    data = disk.read_bytes()

    # 64 KiB every 40 ms: about 10 s for the whole file.
    with serve_slowly(data, delay=0.04) as base:
        page = new_page()
        sign_in(page, dashboard, access_token(kube, a, alice), a)
        page.goto(f"{dashboard}/p/{a}/images")
        page.fill("#name", "disk")
        page.fill("#url", f"{base}/disk.qcow2")
        page.fill("#sha256", hashlib.sha256(data).hexdigest())
        page.select_option("#diskFormat", "qcow2")
        page.click("#image-form button[type=submit]")
        page.wait_for_url(re.compile(rf"/p/{a}/images$"))
        page.wait_for_selector('#images tbody[data-live-state="on"]')
        # Record every percentage the page shows, as it shows it.
        page.evaluate("""() => {
            window.percents = [];
            new MutationObserver(() => {
                const pct = document.querySelector('#images tr[data-name="disk"] .pct');
                if (pct) window.percents.push(pct.textContent);
            }).observe(document.querySelector('#images tbody'), {childList: true, subtree: true});
        }""")
        page.evaluate("document.body.dataset.mark = 'importing'")
        expect(page.locator('#images tr[data-name="disk"] td.phase .badge')).to_have_text("active", timeout=120_000)
        assert page.evaluate("document.body.dataset.mark") == "importing"
        seen = [int(p.rstrip("%")) for p in page.evaluate("window.percents")]
        assert any(0 < p < 100 for p in seen), seen  # a moving bar, not just 0 and done
        assert seen == sorted(seen) and seen[-1] == 100
        assert kube.get("images", "disk", a)["status"]["checksum"] == hashlib.sha256(data).hexdigest()
        shot(page, "images")
        assert page.problems == []


def test_member_creates_a_database_and_watches_it_become_active(kube, projects, dashboard, new_page, podrunner):
    alice = user("alice")
    a = projects([{"name": alice, "role": "member"}])
    page = new_page()
    sign_in(page, dashboard, access_token(kube, a, alice), a)
    page.goto(f"{dashboard}/p/{a}/databases")
    # A version the engine catalog does not offer: the API server's rule, in its words.
    page.fill("#name", "orders")
    page.select_option("#engine", "postgresql")
    page.fill("#version", "1.0")
    page.fill("#size", "1Gi")
    page.click("#database-form button[type=submit]")
    assert "spec.version is not offered" in page.locator("p.form-error").inner_text()
    assert page.input_value("#name") == "orders"  # the form comes back as it was sent
    assert kube.get("databases", "orders", a) is None
    page.fill("#version", "")
    page.click("#database-form button[type=submit]")
    page.wait_for_url(re.compile(rf"/p/{a}/databases$"))
    page.wait_for_selector('#databases tbody[data-live-state="on"]')
    page.evaluate("document.body.dataset.mark = 'creating'")
    row = '#databases tr[data-name="orders"]'
    expect(page.locator(f"{row} td.phase .badge")).to_have_text("ACTIVE", timeout=180_000)
    assert page.evaluate("document.body.dataset.mark") == "creating"  # updated live, not reloaded
    status = kube.get("databases", "orders", a)["status"]
    expect(page.locator(f"{row} td.connection")).to_contain_text(status["secretName"])
    expect(page.locator(f"{row} td.instances")).to_have_text(re.compile(r"^1/1"))
    shot(page, "databases")
    page.click(f'{row} button[data-action="delete"]')
    page.wait_for_url(re.compile(rf"/p/{a}/databases$"))
    wait_for(lambda: kube.get("databases", "orders", a) is None, 120, what="database deleted")
    assert page.problems == []


def test_stacks_and_data_processing_pages_show_status(kube, projects, dashboard, new_page):
    alice = user("alice")
    a = projects([{"name": alice, "role": "member"}])
    template = {"heat_template_version": "2018-08-31",
                "resources": {"key": {"type": "OS::Nova::KeyPair", "properties": {"name": "deploy"}}},
                "outputs": {"joined": {"value": {"list_join": ["-", ["a", "b"]]}}}}
    kube.create("stacks", {"kind": "Stack", "metadata": {"name": "keys"}, "spec": {"template": json.dumps(template)}}, a)
    wait_for(lambda: (kube.get("stacks", "keys", a).get("status") or {}).get("phase") == "CREATE_COMPLETE", 90,
             what="stack CREATE_COMPLETE")
    page = new_page()
    sign_in(page, dashboard, access_token(kube, a, alice), a)
    page.goto(f"{dashboard}/p/{a}/stacks")
    expect(page.locator("#stack-keys h2 .badge")).to_have_text("CREATE_COMPLETE")
    expect(page.locator('#stack-keys tr[data-name="key"] td.state')).to_have_text("CREATE_COMPLETE")
    expect(page.locator('#stack-keys dd[data-output="joined"]')).to_have_text("a-b")
    shot(page, "stacks")
    # A DataCluster naming a flavor that does not exist: the page shows why it is not ready.
    from stratus.api.datacluster import sample

    kube.create("dataclusters", sample("etl", workers=1, flavor="no-such-flavor"), a)
    reason = wait_for(lambda: kube.condition(kube.get("dataclusters", "etl", a)).get("message"), 60, what="a reason")
    page.goto(f"{dashboard}/p/{a}/dataprocessing")
    expect(page.locator('#dataclusters tr[data-name="etl"] .hint')).to_have_text(reason)
    page.goto(f"{dashboard}/p/{a}/stacks")
    page.click('#stack-keys button[data-action="delete"]')
    page.wait_for_url(re.compile(rf"/p/{a}/stacks$"))
    wait_for(lambda: kube.get("stacks", "keys", a) is None, 90, what="stack deleted")
    assert kube.kubectl("get", "keypairs", "-n", a, "-o", "name", check=True).stdout.strip() == ""
    assert page.problems == []


def test_long_lists_are_paged_and_live_rows_stay_on_their_page(kube, projects, dashboard, new_page):
    alice = user("alice")
    a = projects([{"name": alice, "role": "member"}])
    f = flavor(kube)
    names = [f"web-{i:02d}" for i in range(PAGE + 2)]
    for name in names:
        kube.create("servers", server_body(name, f), a)
    page = new_page()
    sign_in(page, dashboard, access_token(kube, a, alice), a)
    page.goto(f"{dashboard}/p/{a}/servers")
    rows = "#servers tbody tr[data-name]"
    assert page.locator(rows).evaluate_all("rs => rs.map(r => r.dataset.name)") == names[:PAGE]
    page.wait_for_selector('#servers tbody[data-live-state="on"]')
    # A server created now sorts after this page's last name: it belongs to the next page.
    kube.create("servers", server_body("zz-late", f), a)
    page.click("#next-page")
    page.wait_for_selector('#servers tbody[data-live-state="on"]')
    assert page.locator(rows).evaluate_all("rs => rs.map(r => r.dataset.name)") == names[PAGE:] + ["zz-late"]
    kube.create("servers", server_body("zz-later", f), a)  # the last page is open-ended: it arrives live
    expect(page.locator('#servers tr[data-name="zz-later"]')).to_have_count(1, timeout=30_000)
    page.click("#first-page")
    page.wait_for_selector('#servers tbody[data-live-state="on"]')
    kube.create("servers", server_body("zzz-elsewhere", f), a)
    # Events arrive in order: once a later change to a row on this page shows, the
    # creation before it has been seen (and left out).
    kube.patch("servers", names[0], {"spec": {"powerState": "Stopped"}}, a)
    expect(page.locator(f'#servers tr[data-name="{names[0]}"] td.power')).to_contain_text("Stopped", timeout=30_000)
    assert page.locator(rows).count() == PAGE and page.locator('tr[data-name="zzz-elsewhere"]').count() == 0
    assert page.problems == []
