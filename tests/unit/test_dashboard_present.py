"""What the dashboard's pages show and its forms send (pure, table-tested)."""

from __future__ import annotations

import pytest

from stratus.services.dashboard import present


def test_quota_bars_from_the_resource_quota():
    rq = {"status": {
        "hard": {"count/servers.stratus.dev": "4", "requests.cpu": "8", "requests.memory": "16Gi", "requests.storage": "100Gi",
                 "count/buckets.stratus.dev": "0"},
        "used": {"count/servers.stratus.dev": "3", "requests.cpu": "7500m", "requests.memory": "16Gi", "requests.storage": "0"},
    }}
    bars = {b["name"]: b for b in present.quota_bars(rq)}
    assert list(bars) == ["servers", "vcpus", "memory", "volumeGigabytes", "buckets"]  # spec.quota order
    assert bars["servers"] | {} == bars["servers"] and (bars["servers"]["used"], bars["servers"]["limit"]) == ("3", "4")
    assert bars["servers"]["percent"] == 75 and bars["servers"]["level"] == "ok"
    assert (bars["vcpus"]["used"], bars["vcpus"]["percent"], bars["vcpus"]["level"]) == ("7.5", 94, "high")
    assert (bars["memory"]["used"], bars["memory"]["limit"], bars["memory"]["level"]) == ("16 GiB", "16 GiB", "full")
    assert bars["volumeGigabytes"]["percent"] == 0 and bars["buckets"]["percent"] == 0
    assert present.quota_bars(None) == [] and present.quota_bars({}) == []


@pytest.mark.parametrize("server, expected", [
    ({"metadata": {"name": "web"}, "spec": {"flavor": "m1", "image": "fedora"}},
     {"phase": "BUILD", "flavor": "m1", "source": "image fedora", "power": "Running", "deleting": False}),
    ({"metadata": {"name": "db"}, "spec": {"flavor": "m1", "bootVolume": "root", "powerState": "Stopped"},
      "status": {"phase": "SHUTOFF", "flavor": "m2", "node": "n1", "addresses": [{"network": "pod", "address": "10.0.0.5"}],
                 "conditions": [{"type": "Ready", "status": "True", "message": "fine"}]}},
     {"phase": "SHUTOFF", "flavor": "m2", "node": "n1", "addresses": "10.0.0.5", "source": "volume root", "message": ""}),
    ({"metadata": {"name": "x", "deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"flavor": "m1", "containerDisk": "q/f:41"},
      "status": {"phase": "ERROR", "conditions": [{"type": "Ready", "status": "False", "message": "no node fits"}]}},
     {"phase": "DELETING", "message": "no node fits", "deleting": True, "source": "q/f:41"}),
])
def test_server_rows(server, expected):
    row = present.server_row(server)
    assert {k: row[k] for k in expected} == expected


def test_image_row_progress():
    img = {"metadata": {"name": "f"}, "spec": {"diskFormat": "qcow2", "source": {"http": {"url": "http://x/f.qcow2"}}},
           "status": {"phase": "importing", "progress": {"bytes": 10, "total": 40, "percent": 25}}}
    row = present.image_row(img)
    assert (row["percent"], row["origin"], row["phase"]) == (25, "http://x/f.qcow2", "importing")
    img["status"] = {"phase": "active"}
    assert present.image_row(img)["percent"] == 100


@pytest.mark.parametrize("form, errors", [
    ({"name": "web", "flavor": "m1", "source": "image", "image": "fedora"}, {}),
    ({"name": "web", "flavor": "m1", "source": "containerDisk", "containerDisk": "quay.io/x:1"}, {}),
    ({"name": "Web!", "flavor": "", "source": "image"}, {"name", "flavor", "image"}),
    ({"name": "web", "flavor": "m1", "source": "volume"}, {"bootVolume"}),
    ({"name": "web", "flavor": "m1", "source": "carrier-pigeon"}, {"source"}),
    ({"name": "web", "flavor": "m1", "source": "image", "image": "i", "networks": "good, Bad_One"}, {"networks"}),
])
def test_launch_form_checks_what_the_schema_says(form, errors):
    body, found = present.server_from_form(form)
    assert set(found) == set(errors)
    if not errors:
        assert body["kind"] == "Server" and body["metadata"]["name"] == "web" and body["spec"]["flavor"] == "m1"


def test_launch_form_builds_the_whole_spec():
    body, errors = present.server_from_form({"name": "web", "flavor": "m1", "source": "image", "image": "fedora",
                                             "keyPair": "mine", "serverGroup": "spread", "networks": "a, b",
                                             "userData": "#cloud-config\n", "containerDisk": "ignored"})
    assert not errors
    assert body["spec"] == {"flavor": "m1", "image": "fedora", "keyPair": "mine", "serverGroup": "spread",
                            "networks": [{"name": "a"}, {"name": "b"}], "userData": "#cloud-config\n"}


@pytest.mark.parametrize("builder, form, errors", [
    (present.volume_from_form, {"name": "data", "size": "10"}, set()),
    (present.volume_from_form, {"name": "data", "size": "ten"}, {"size"}),
    (present.image_from_form, {"name": "f", "url": "http://x/f", "sha256": "a" * 64}, set()),
    (present.image_from_form, {"name": "f", "url": "ftp://x", "sha256": "no"}, {"url", "sha256"}),
    (present.keypair_from_form, {"name": "k", "publicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE me@host"}, set()),
    (present.keypair_from_form, {"name": "k", "publicKey": "-----BEGIN OPENSSH PRIVATE KEY-----"}, {"publicKey"}),
    (present.bucket_from_form, {"name": "b"}, set()),
    (present.database_from_form, {"name": "db", "engine": "postgresql", "size": "1Gi"}, set()),
    (present.database_from_form, {"name": "db", "engine": "oracle", "size": "1Gi", "instances": "10"},
     {"engine", "instances"}),
    (present.database_from_form, {"name": "", "engine": "mariadb", "size": "a lot"}, {"name", "size"}),
])
def test_other_forms(builder, form, errors):
    body, found = builder(form)
    assert set(found) == errors


def test_volume_size_defaults_to_gibibytes():
    assert present.volume_from_form({"name": "d", "size": "10"})[0]["spec"]["size"] == "10Gi"


@pytest.mark.parametrize("causes, expected", [
    ({"spec.flavor": "Required value"}, {"flavor": "Required value"}),
    ({"metadata.name": "Invalid value"}, {"name": "Invalid value"}),
    ({"spec.networks[0].name": "bad"}, {"networks": "bad"}),
    ({"spec.source.http.sha256": "should match"}, {"sha256": "should match"}),
    ({"spec.storage.size": "cannot shrink"}, {"size": "cannot shrink"}),
])
def test_api_field_errors_map_to_form_fields(causes, expected):
    assert dict(present.api_field_errors(causes)) == expected


def test_recent_events_newest_first():
    evs = [{"lastTimestamp": "2026-01-01T00:00:0%dZ" % i, "type": "Normal", "reason": f"R{i}",
            "involvedObject": {"kind": "Server", "name": "web"}, "message": "m"} for i in range(5)]
    rows = present.recent_events(evs, limit=3)
    assert [r["reason"] for r in rows] == ["R4", "R3", "R2"] and rows[0]["object"] == "Server/web"


def test_server_actions_are_spec_or_annotations():
    assert present.SERVER_ACTIONS["stop"] == {"spec": {"powerState": "Stopped"}}
    assert present.SERVER_ACTIONS["reboot"] == {"metadata": {"annotations": {"stratus.dev/reboot": "hard"}}}
    assert present.SERVER_ACTIONS["delete"] == "delete"


def test_database_form_builds_the_spec():
    body, errors = present.database_from_form({"name": "orders", "engine": "mariadb", "size": "5", "instances": "1",
                                               "version": "11.4", "flavor": ""})
    assert not errors
    assert body["spec"] == {"engine": "mariadb", "storage": {"size": "5Gi"}, "instances": 1, "version": "11.4"}


def test_database_row_reads_status():
    row = present.database_row({
        "metadata": {"name": "orders"}, "spec": {"engine": "postgresql", "instances": 3, "storage": {"size": "1Gi"}},
        "status": {"phase": "ACTIVE", "engineVersion": "17.2", "primary": "orders-0", "serviceName": "orders",
                   "secretName": "orders-connection", "instances": [{"name": "orders-0", "ready": True},
                                                                    {"name": "orders-1", "ready": True},
                                                                    {"name": "orders-2", "ready": False}],
                   "recoverableWindow": {"earliest": "2026-12-01T00:00:00Z", "latest": "2026-12-03T00:00:00Z"},
                   "conditions": [{"type": "Ready", "status": "True", "message": "ignored when ready"}]}})
    assert (row["ready"], row["instances"], row["version"], row["message"]) == (2, 3, "17.2", "")
    assert row["window"].startswith("2026-12-01")


def test_stack_row_never_shows_a_secret_output():
    row = present.stack_row({"metadata": {"name": "web"}, "status": {
        "phase": "CREATE_COMPLETE", "outputsSecret": "web-outputs",
        "resources": [{"name": "key", "type": "OS::Nova::KeyPair", "state": "CREATE_COMPLETE"}],
        "outputs": [{"name": "ip", "value": "10.0.0.5"}, {"name": "password", "secret": True, "value": "hunter2"}]}})
    assert row["outputs"] == [{"name": "ip", "secret": False, "value": "10.0.0.5"},
                              {"name": "password", "secret": True, "value": ""}]
    assert row["resources"][0]["type"] == "OS::Nova::KeyPair"


def test_data_rows():
    cluster = present.datacluster_row({"metadata": {"name": "c"}, "status": {
        "phase": "Active", "workers": "2/2", "cores": 4, "masterUrl": "spark://c-master:7077"}})
    assert (cluster["workers"], cluster["master"]) == ("2/2", "spark://c-master:7077")
    job = present.datajob_row({"metadata": {"name": "j"}, "spec": {"clusterName": "c"},
                               "status": {"phase": "Failed", "reason": "ZeroDivisionError", "attempt": 2}})
    assert (job["cluster"], job["reason"], job["attempt"]) == ("c", "ZeroDivisionError", 2)


def test_paging():
    assert present.page_params({}) == {"limit": str(present.PAGE_SIZE)}
    assert present.page_params({"continue": "t"}, size=5) == {"limit": "5", "continue": "t"}
    first = present.pager({"metadata": {"continue": "t", "remainingItemCount": 7}}, ["a", "b"], {})
    assert first == {"next": "t", "continued": False, "remaining": 7, "first": "", "last": "b"}
    last = present.pager({"metadata": {}}, ["c", "d"], {"continue": "t"})
    assert last == {"next": "", "continued": True, "remaining": None, "first": "c", "last": ""}
