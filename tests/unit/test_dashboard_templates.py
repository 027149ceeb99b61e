"""Every dashboard template renders with representative data, escapes what users wrote,
and shows action buttons only where the API server said the user may act."""

from __future__ import annotations

import pathlib

import jinja2
import pytest

from stratus.services.dashboard import present
from stratus.services.dashboard.security import SessionStore

TEMPLATES = pathlib.Path(present.__file__).parent / "templates"
ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=jinja2.StrictUndefined)

SERVER = {"metadata": {"name": "web"}, "spec": {"flavor": "m1", "containerDisk": "q/f:41"},
          "status": {"phase": "ACTIVE", "node": "n1", "addresses": [{"network": "pod", "address": "10.0.0.9"}]}}
HOSTILE = {"metadata": {"name": "x"}, "spec": {"flavor": "m1"},
           "status": {"phase": "ERROR", "conditions": [{"type": "Ready", "status": "False", "message": "<script>alert(1)</script>"}]}}
ALL = {f"{v} {r}": True for v in ("create", "patch", "delete") for r in ("servers", "volumes", "images", "keypairs", "buckets",
                                                                   "databases", "dataclusters", "datajobs", "stacks")}
ALL["patch consolidationplans"] = True


def base(**ctx):
    session = SessionStore().create("opaque-token", "alice", [], ["demo", "other"])
    return {"session": session, "csrf": session.csrf, "project": "demo", "projects": session.projects, "flash": [("ok", "done")],
            "admin": {"baremetal": True, "plans": True, "catalog": True}, "ns": "demo", "errors": {}, "values": {},
            "error": "", "can": {}, **ctx}


#: The second page of a list with more to come.
PAGED = present.pager({"metadata": {"continue": "tok/en+1", "remainingItemCount": 150}}, ["a", "m"], {"continue": "x"})

PAGES = {
    "overview.html": dict(bars=present.quota_bars({"status": {"hard": {"count/servers.stratus.dev": "2"},
                                                              "used": {"count/servers.stratus.dev": "1"}}}),
                          events=present.recent_events([{"type": "Warning", "reason": "R", "message": "m"}]),
                          phases=[("ACTIVE", 1)], servers=1),
    "servers.html": dict(paging=PAGED, servers=[present.server_row(SERVER), present.server_row(HOSTILE)], rv="42", flavors=["m1"],
                         images=["fedora"]),
    "server_new.html": dict(choices={"flavors": [{"name": "m1", "vcpus": 1, "ram": "1Gi", "disk": "10Gi"}], "images": ["f"],
                                     "volumes": [], "keypairs": ["k"], "groups": [], "networks": None},
                            errors={"": "exceeded quota: stratus-quota", "name": "bad name"}),
    "server.html": dict(server=SERVER, row=present.server_row(SERVER), rv="7", flavors=["m1", "m2"], images=["fedora"]),
    "flavors.html": dict(flavors=[{"metadata": {"name": "m1"}, "spec": {"vcpus": 1, "ram": "1Gi", "extraSpecs": {"a": "b"}}}]),
    "keypairs.html": dict(keypairs=[{"metadata": {"name": "k"}, "status": {"fingerprintSha256": "SHA256:x"}}]),
    "volumes.html": dict(paging=PAGED, volumes=[present.volume_row({"metadata": {"name": "d"}, "spec": {"size": "1Gi", "attachTo": "web"}})],
                         rv="1", servers=["web"], types=["fast"], images=[]),
    "images.html": dict(paging=PAGED, images=[present.image_row({"metadata": {"name": "i"}, "spec": {"diskFormat": "qcow2"},
                                                   "status": {"phase": "importing", "progress": {"percent": 40}}})], rv="1"),
    "buckets.html": dict(buckets=[present.bucket_row({"metadata": {"name": "b"}, "spec": {}, "status": {
        "endpoint": "http://s3", "bucketName": "demo-b", "secretName": "b", "configMapName": "b"}})], classes=["default"]),
    "admin_baremetal.html": dict(nodes=[{"metadata": {"name": "n"}, "spec": {"bmc": {"address": "ipmi://h"}}, "status": {}}]),
    "admin_plans.html": dict(plans=[{"metadata": {"name": "p"}, "spec": {"policy": "c", "actions": []},
                                     "status": {"phase": "Recommended"}}]),
    "admin_catalog.html": dict(catalogs=[{"status": {"endpoints": [{"name": "dashboard", "url": "http://d"}]}}]),
    "databases.html": dict(paging=PAGED, databases=[present.database_row({"metadata": {"name": "db"}, "spec": {"engine": "postgresql"},
                                                            "status": {"phase": "ACTIVE", "serviceName": "db",
                                                                       "secretName": "db-connection"}})],
                           backups=[{"name": "b1", "database": "db", "phase": "Completed", "size": 10, "ended": "t"}],
                           rv="3", flavors=["m1"], engines=present.DATABASE_ENGINES),
    "dataprocessing.html": dict(clusters=[present.datacluster_row({"metadata": {"name": "c"}, "status": {"phase": "Active"}})],
                                jobs=[present.datajob_row({"metadata": {"name": "j"}, "spec": {"clusterName": "c"}})]),
    "stacks.html": dict(stacks=[present.stack_row({"metadata": {"name": "s"}, "status": {
        "phase": "CREATE_COMPLETE", "outputsSecret": "s-outputs",
        "outputs": [{"name": "pw", "secret": True, "value": "opaque-token"}, {"name": "ip", "value": "10.0.0.1"}]}})]),
    "projects.html": dict(),
    "error.html": dict(title="Not allowed", message='servers is forbidden: User "u" cannot list'),
}


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_page_renders(name):
    html = ENV.get_template(name).render(base(can=ALL, **PAGES[name]))
    assert "<title>" in html and "/static/app.js" in html


def test_signin_renders_without_a_session():
    html = ENV.get_template("signin.html").render(session=None, csrf="c", error="nope", info="", next="", flash=[], admin={})
    assert "nope" in html and 'name="csrf" value="c"' in html


def test_all_pages_are_covered():
    assert {p.name for p in TEMPLATES.glob("*.html") if not p.name.startswith("_")} - {"base.html", "signin.html"} == set(PAGES)


def test_user_text_is_escaped():
    html = ENV.get_template("servers.html").render(base(**PAGES["servers.html"]))
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize("page, selector", [
    ("servers.html", 'data-action="delete"'), ("servers.html", 'id="launch"'), ("volumes.html", 'data-action="detach"'),
    ("images.html", 'id="image-form"'), ("keypairs.html", 'data-action="delete"'), ("buckets.html", 'method="post" action="/p/demo/buckets"'),
    ("admin_plans.html", 'data-action="approve"'), ("server.html", 'data-action="resize"'),
    ("databases.html", 'id="database-form"'), ("databases.html", 'data-action="delete"'),
    ("dataprocessing.html", 'data-action="delete"'), ("stacks.html", 'data-action="delete"'),
])
def test_actions_only_where_allowed(page, selector):
    assert selector in ENV.get_template(page).render(base(can=ALL, **PAGES[page]))
    assert selector not in ENV.get_template(page).render(base(can={}, **PAGES[page]))


def test_no_token_in_any_page():
    for name in PAGES:
        assert "opaque-token" not in ENV.get_template(name).render(base(can=ALL, **PAGES[name]))


def test_a_paged_list_links_its_pages_and_spans_its_names():
    html = ENV.get_template("servers.html").render(base(can=ALL, **PAGES["servers.html"]))
    assert 'href="/p/demo/servers?continue=tok/en%2B1"' in html and "(150 more)" in html
    assert 'id="first-page"' in html and 'data-first="a" data-last="m"' in html
    single = dict(PAGES["servers.html"], paging=present.pager({"metadata": {}}, ["a"], {}))
    html = ENV.get_template("servers.html").render(base(can=ALL, **single))
    assert 'class="pager"' not in html and 'data-first="" data-last=""' in html
