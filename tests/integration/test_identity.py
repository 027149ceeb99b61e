"""Keystone on the real API server with real RBAC: every "user" here is an impersonated
identity (or an issued token), never the admin credentials, and every refusal asserted
is the API server's own."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid

import pytest
from kubernetes.client.rest import ApiException

from .identity import *  # noqa: F401,F403  (fixtures)
from .identity import TokenKube, forbidden, project_ready
from .kube import wait_for


def flavor(kube, vcpus=1, ram="1Gi") -> str:
    name = f"f-{uuid.uuid4().hex[:8]}"
    kube.create("flavors", {"kind": "Flavor", "metadata": {"name": name}, "spec": {"vcpus": vcpus, "ram": ram}})
    return name


def server(name: str, flavor_name: str, **meta) -> dict:
    return {"kind": "Server", "metadata": {"name": name, **meta},
            "spec": {"flavor": flavor_name, "containerDisk": "quay.io/containerdisks/fedora:41"}}


def user(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}@example.org"


def rejection(fn) -> str:
    with pytest.raises(ApiException) as info:
        fn()
    assert info.value.status == 422, info.value.body
    return json.loads(info.value.body)["message"]


# --- Roles: members manage their project only; readers only read -----------------------


def test_member_creates_in_own_project_and_is_refused_elsewhere(kube, as_user, projects):
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    a = projects([{"name": alice, "role": "member"}, {"name": carol, "role": "reader"}])
    b = projects([{"name": bob, "role": "member"}])
    f = flavor(kube)
    ak, ck = as_user(alice), as_user(carol)
    ak.create("servers", server("web", f), a)
    assert kube.get("servers", "web", a) is not None
    msg = forbidden(lambda: ak.create("servers", server("web", f), b))
    assert alice in msg and 'cannot create resource "servers"' in msg and f'namespace "{b}"' in msg
    forbidden(lambda: ak.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", b, "servers"))
    forbidden(lambda: ak.custom.list_cluster_custom_object("stratus.dev", "v1alpha1", "servers"))
    # The reader sees the project's objects and can change none of them.
    listed = ck.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", a, "servers")["items"]
    assert [s["metadata"]["name"] for s in listed] == ["web"]
    msg = forbidden(lambda: ck.create("servers", server("mine", f), a))
    assert 'cannot create resource "servers"' in msg
    forbidden(lambda: ck.delete("servers", "web", a))
    # Status is the operator's: a member cannot fake it (a metering record reads it).
    msg = forbidden(lambda: ak.custom.patch_namespaced_custom_object_status(
        "stratus.dev", "v1alpha1", a, "servers", "web", {"status": {"phase": "ACTIVE", "vcpus": 0}}))
    assert "written by the Stratus operator only" in msg
    # kubectl as the member agrees with the API.
    assert ak.kubectl("auth", "can-i", "create", "servers.stratus.dev", "-n", a).stdout.strip() == "yes"
    assert ak.kubectl("auth", "can-i", "create", "servers.stratus.dev", "-n", b).stdout.strip() == "no"
    # Group members get their role too.
    team = f"team-{uuid.uuid4().hex[:6]}"
    kube.patch("projects", a, {"spec": {"members": [{"name": alice, "role": "member"}, {"name": carol, "role": "reader"},
                                                    {"kind": "Group", "name": team, "role": "member"}]}})
    dave = as_user(user("dave"), team)
    wait_for(lambda: dave.kubectl("auth", "can-i", "create", "servers.stratus.dev", "-n", a).stdout.strip() == "yes", 30,
             what="group member allowed")


def test_secrets_of_one_project_never_show_in_another(kube, as_user, projects):
    alice, bob = user("alice"), user("bob")
    a = projects([{"name": alice, "role": "admin"}])
    b = projects([{"name": bob, "role": "admin"}])
    kube.core.create_namespaced_secret(a, {"metadata": {"name": "a-secret"}, "stringData": {"k": "a"}})
    kube.core.create_namespaced_secret(b, {"metadata": {"name": "b-secret"}, "stringData": {"k": "b"}})
    ak = as_user(alice)
    names = [s.metadata.name for s in ak.core.list_namespaced_secret(a).items]
    assert "a-secret" in names and "b-secret" not in names
    assert "secrets" in forbidden(lambda: ak.core.list_namespaced_secret(b)) and b in forbidden(lambda: ak.core.list_namespaced_secret(b))
    forbidden(lambda: ak.core.list_secret_for_all_namespaces())
    forbidden(lambda: ak.core.read_namespaced_secret("b-secret", b))
    # Members (not admins) read no Secrets at all, so no one reads another member's token.
    carol = user("carol")
    kube.patch("projects", a, {"spec": {"members": [{"name": alice, "role": "admin"}, {"name": carol, "role": "member"}]}})
    wait_for(lambda: project_ready(kube, a) and project_ready(kube, a)["status"]["members"] == 2, 30, what="2 members")
    forbidden(lambda: as_user(carol).core.list_namespaced_secret(a))


def test_exceeding_a_quota_is_refused_naming_the_quota(kube, as_user, projects):
    alice = user("alice")
    a = projects([{"name": alice, "role": "member"}], quota={"servers": 1, "images": 3, "volumeGigabytes": 10})
    rq = kube.core.read_namespaced_resource_quota("stratus-quota", a)
    assert rq.spec.hard == {"count/servers.stratus.dev": "1", "count/images.stratus.dev": "3", "requests.storage": "10Gi"}
    f = flavor(kube)
    ak = as_user(alice)
    ak.create("servers", server("one", f), a)
    msg = forbidden(lambda: ak.create("servers", server("two", f), a))
    assert "exceeded quota: stratus-quota" in msg and "count/servers.stratus.dev" in msg
    # Status reports use against the limit.
    proj = wait_for(lambda: (p := kube.get("projects", a)) and any(
        q["name"] == "servers" and q["used"] == "1" for q in p["status"].get("quota", [])) and p, 30, what="usage 1/1")
    usage = {q["name"]: q for q in proj["status"]["quota"]}
    assert usage["servers"] == {"name": "servers", "resource": "count/servers.stratus.dev", "used": "1", "limit": "1"}
    assert usage["volumeGigabytes"]["limit"] == "10Gi"
    # Raising the quota lets the second one in.
    kube.patch("projects", a, {"spec": {"quota": {"servers": 2}}})
    wait_for(lambda: kube.core.read_namespaced_resource_quota("stratus-quota", a).status.hard.get("count/servers.stratus.dev") == "2",
             30, what="quota raised")
    ak.create("servers", server("two", f), a)


def test_disabled_project_refuses_its_members_and_keeps_everything(kube, as_user, projects):
    alice = user("alice")
    a = projects([{"name": alice, "role": "member"}])
    f = flavor(kube)
    ak = as_user(alice)
    ak.create("servers", server("kept", f), a)
    kube.patch("projects", a, {"spec": {"enabled": False}})
    proj = wait_for(lambda: (p := kube.get("projects", a)) and p["status"].get("phase") == "Disabled" and p, 30, what="Disabled")
    assert kube.condition(proj)["reason"] == "Disabled" and "spec.enabled: true" in kube.condition(proj)["message"]
    assert proj["status"]["members"] == 0
    msg = forbidden(lambda: ak.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", a, "servers"))
    assert alice in msg
    forbidden(lambda: ak.create("servers", server("new", f), a))
    assert kube.get("servers", "kept", a) is not None  # nothing deleted
    kube.patch("projects", a, {"spec": {"enabled": True}})
    wait_for(lambda: project_ready(kube, a), 30, what="Active again")
    wait_for(lambda: ak.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", a, "servers")["items"], 30,
             what="access restored")


def test_deleting_a_project_deletes_its_objects_first_and_leaves_nothing(kube, as_user, projects, operator):
    alice = user("alice")
    a = projects([{"name": alice, "role": "admin"}], quota={"servers": 5})
    f = flavor(kube)
    ak = as_user(alice)
    ak.create("servers", server("plain", f), a)
    # A finalizer of the test's own stands for a bucket or BMC that takes its time.
    kube.create("servers", server("held", f, finalizers=["test.stratus.dev/hold"]), a)
    ak.create("policyrules", {"kind": "PolicyRule", "metadata": {"name": "small"},
                              "spec": {"template": {"name": "MaxFlavor", "maxVcpus": 8}}}, a)
    rule = wait_for(lambda: (r := kube.get("policyrules", "small", a)) and r.get("status", {}).get("phase") == "Enforced" and r,
                    30, what="rule Enforced")
    policy_name = rule["status"]["policy"]
    kube.core.create_namespaced_secret(a, {"metadata": {"name": "credentials"}, "stringData": {"k": "v"}})
    kube.delete("projects", a)
    proj = wait_for(lambda: (p := kube.get("projects", a)) and p["status"].get("remaining") == ["Server/held"] and p, 60,
                    what="waiting on the held Server")
    assert proj["status"]["phase"] == "Terminating"
    cond = kube.condition(proj)
    assert cond["reason"] == "DeletingObjects" and "Server/held" in cond["message"]
    # The namespace and what the finalizers may need stay until the Stratus objects are gone.
    assert kube.core.read_namespace(a).status.phase == "Active"
    assert kube.core.read_namespaced_secret("credentials", a)
    assert kube.get("servers", "plain", a) is None and kube.get("policyrules", "small", a) is None
    # Members lost access at once.
    forbidden(lambda: ak.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", a, "servers"))
    # An operator crash mid-deletion changes nothing: the restarted one carries on.
    operator.kill()
    operator.start()
    kube.patch("servers", "held", {"metadata": {"finalizers": None}}, a)
    wait_for(lambda: kube.get("projects", a) is None, 120, what="Project gone")
    assert _namespace(kube, a) is None
    assert kube.get("validatingadmissionpolicies", policy_name, group="admissionregistration.k8s.io", version="v1") is None
    rbs = kube.api.call_api(f"/apis/rbac.authorization.k8s.io/v1/rolebindings", "GET", response_type="object",
                            auth_settings=["BearerToken"], _return_http_data_only=True,
                            query_params=[("labelSelector", f"stratus.dev/project={a}")])
    assert rbs["items"] == []


def _namespace(kube, name):
    try:
        return kube.core.read_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_api_server_refuses_bad_identity_objects(kube, crds):
    msg = rejection(lambda: kube.create("projects", {"kind": "Project", "metadata": {"name": f"p-{uuid.uuid4().hex[:6]}"},
                                                     "spec": {"members": [{"kind": "ServiceAccount", "name": "deployer"}]}}))
    assert "spec.members[0].name" in msg and "namespace/name" in msg
    msg = rejection(lambda: kube.create("projects", {"kind": "Project", "metadata": {"name": f"p-{uuid.uuid4().hex[:6]}"},
                                                     "spec": {"quota": {"servers": -1, "memory": "lots"}}}))
    assert "spec.quota.servers" in msg and "spec.quota.memory" in msg
    msg = rejection(lambda: kube.create("clusterpolicyrules", {"kind": "ClusterPolicyRule", "metadata": {"name": "both"},
                                                               "spec": {"expression": "true", "message": "m",
                                                                        "template": {"name": "NoPublicBuckets"}}}))
    assert "exactly one of spec.expression and spec.template" in msg
    msg = rejection(lambda: kube.create("clusterpolicyrules", {"kind": "ClusterPolicyRule", "metadata": {"name": "nomsg"},
                                                               "spec": {"expression": "true", "match": {"resources": ["servers"]}}}))
    assert "spec.message is required" in msg
    msg = rejection(lambda: kube.create("accesstokens", {"kind": "AccessToken", "metadata": {"name": "t"},
                                                         "spec": {"user": "x", "ttl": "eight hours"}}, "default"))
    assert "spec.ttl" in msg


# --- Policy rules ---------------------------------------------------------------------


def test_policy_rule_denies_with_its_message_and_lifts_when_deleted(kube, as_user, projects):
    alice, bob = user("alice"), user("bob")
    a = projects([{"name": alice, "role": "admin"}, {"name": bob, "role": "member"}])
    small, big = flavor(kube, vcpus=2, ram="2Gi"), flavor(kube, vcpus=16, ram="64Gi")
    ak, bk = as_user(alice), as_user(bob)
    rule = {"kind": "PolicyRule", "metadata": {"name": "no-big"},
            "spec": {"template": {"name": "MaxFlavor", "maxVcpus": 4, "maxRam": "8Gi"},
                     "message": "Members may not create Servers larger than 4 vCPUs / 8Gi here"}}
    # Only admins write rules.
    msg = forbidden(lambda: bk.create("policyrules", rule, a))
    assert "only project admins may create, change or delete PolicyRules" in msg
    ak.create("policyrules", rule, a)
    wait_for(lambda: kube.get("policyrules", "no-big", a).get("status", {}).get("phase") == "Enforced", 30, what="Enforced")
    msg = wait_for(lambda: _denied(bk, server("huge", big), a), 30, what="the rule to deny")
    assert "Members may not create Servers larger than 4 vCPUs / 8Gi here" in msg
    assert "Members may not create Servers larger" in _try_create(bk, server("huge", big), a, dry_run=False)
    bk.create("servers", server("fine", small), a)
    # The rule holds in its project only.
    b = projects([{"name": bob, "role": "member"}])
    bk.create("servers", server("huge", big), b)
    ak.delete("policyrules", "no-big", a)
    wait_for(lambda: kube.get("policyrules", "no-big", a) is None, 30, what="rule deleted")
    wait_for(lambda: _allowed(bk, server("huge", big), a), 30, what="the rule to lift")
    assert _try_create(bk, server("huge", big), a, dry_run=False) is None


def test_generic_rule_and_invalid_expression(kube, as_user, projects):
    alice = user("alice")
    a = projects([{"name": alice, "role": "admin"}])
    f = flavor(kube)
    ak = as_user(alice)
    ak.create("policyrules", {"kind": "PolicyRule", "metadata": {"name": "registry"},
                              "spec": {"match": {"resources": ["servers"]},
                                       "expression": "object.spec.containerDisk.startsWith('registry.example.org/')",
                                       "message": "images only from registry.example.org"}}, a)
    msg = wait_for(lambda: _denied(ak, server("ext", f), a), 30, what="generic rule denies")
    assert "images only from registry.example.org" in msg
    ok = server("int", f)
    ok["spec"]["containerDisk"] = "registry.example.org/os/fedora:41"
    ak.create("servers", ok, a)
    ak.create("policyrules", {"kind": "PolicyRule", "metadata": {"name": "broken"},
                              "spec": {"match": {"resources": ["servers"]}, "expression": "object.spec.(", "message": "x"}}, a)
    cond = wait_for(lambda: (c := kube.condition(kube.get("policyrules", "broken", a))).get("reason") and c, 30, what="Invalid")
    assert cond["reason"] == "InvalidExpression" and "spec.expression" in cond["message"]
    assert kube.get("policyrules", "broken", a)["status"]["phase"] == "Invalid"


def test_cluster_rule_applies_to_every_project(kube, as_user, projects):
    alice = user("alice")
    a = projects([{"name": alice, "role": "member"}])
    f = flavor(kube)
    name = f"r-{uuid.uuid4().hex[:6]}"
    kube.create("clusterpolicyrules", {"kind": "ClusterPolicyRule", "metadata": {"name": name},
                                       "spec": {"template": {"name": "ImageRegistries", "registries": ["registry.example.org"]}}})
    try:
        msg = wait_for(lambda: _denied(as_user(alice), server("ext", f), a), 30, what="denied")
        assert "images may come only from registry.example.org" in msg
    finally:
        kube.delete("clusterpolicyrules", name)
    wait_for(lambda: _allowed(as_user(alice), server("ext", f), a), 30, what="lifted")


def _try_create(client, body: dict, namespace: str, dry_run: bool = True) -> str | None:
    """Create as `client` (a dry run by default, which passes admission like the real
    thing); the API server's refusal message, or None when admitted."""
    body = {"apiVersion": "stratus.dev/v1alpha1", **body}
    try:
        client.custom.create_namespaced_custom_object("stratus.dev", "v1alpha1", namespace, "servers", body,
                                                      **({"dry_run": "All"} if dry_run else {}))
        return None
    except ApiException as exc:
        if exc.status in (403, 422):
            return json.loads(exc.body)["message"]
        raise


def _denied(client, body, namespace) -> str | None:
    """Poll helper: the refusal once the policy is in force (None while it is not yet)."""
    return _try_create(client, body, namespace)


def _allowed(client, body, namespace) -> bool:
    return _try_create(client, body, namespace) is None


# --- Tokens ---------------------------------------------------------------------------


def test_token_issue_use_and_revoke(kube, as_user, projects, tmp_path):
    alice, bob = user("alice"), user("bob")
    a = projects([{"name": alice, "role": "member"}, {"name": bob, "role": "admin"}])
    b = projects([{"name": bob, "role": "member"}])
    ak = as_user(alice)
    # A member may issue tokens for themselves only.
    msg = forbidden(lambda: ak.create("accesstokens", {"kind": "AccessToken", "metadata": {"name": "steal"},
                                                       "spec": {"user": bob}}, a))
    assert "only for themselves" in msg
    ak.create("accesstokens", {"kind": "AccessToken", "metadata": {"name": "cli"}, "spec": {"user": alice, "ttl": "1h"}}, a)
    tok = wait_for(lambda: (t := kube.get("accesstokens", "cli", a)).get("status", {}).get("phase") == "Active" and t, 30,
                   what="token Active")
    status = tok["status"]
    assert status["role"] == "member" and status["username"] == f"system:serviceaccount:{a}:{status['serviceAccount']}"
    assert "eyJ" not in json.dumps(tok)  # no JWT anywhere in the object
    # The member reads her kubeconfig; another member cannot.
    secret = ak.core.read_namespaced_secret(status["secretName"], a)
    config = base64.b64decode(secret.data["kubeconfig"]).decode()
    forbidden(lambda: as_user(user("mallory")).core.read_namespaced_secret(status["secretName"], a))
    tk = TokenKube(config, tmp_path / "alice.kubeconfig")
    f = flavor(kube)
    tk.create("servers", server("by-token", f), a)
    forbidden(lambda: tk.create("servers", server("by-token", f), b))
    token = config.split("token: ")[1].split()[0]
    assert _review(kube, token)["authenticated"] is True
    # Revoke: the bound Secret goes with the AccessToken, and the token with it.
    ak.delete("accesstokens", "cli", a)
    wait_for(lambda: kube.get("accesstokens", "cli", a) is None, 30, what="AccessToken gone")
    assert _secret_gone(kube, status["secretName"], a)
    _refused_within(tk, a, REVOCATION_SECONDS)
    assert not _review(kube, token).get("authenticated")


def test_token_for_a_non_member_says_what_to_do(kube, projects):
    a = projects([{"name": user("alice"), "role": "admin"}])
    kube.create("accesstokens", {"kind": "AccessToken", "metadata": {"name": "x"}, "spec": {"user": "stranger"}}, a)
    cond = wait_for(lambda: (c := kube.condition(kube.get("accesstokens", "x", a))).get("reason") and c, 30, what="condition")
    assert cond["reason"] == "NotAMember" and "spec.members" in cond["message"]


def test_token_cli_issue_list_revoke(kube, projects, tmp_path):
    alice = user("alice")
    a = projects([{"name": alice, "role": "member"}])
    env = {"KUBECONFIG": kube.kubeconfig, "PATH": "/usr/bin:/bin"}
    out = tmp_path / "alice.kubeconfig"
    res = _stratus(env, "token", "issue", "--project", a, "--user", alice, "--ttl", "8h", "--name", "cli", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert "eyJ" not in res.stdout + res.stderr  # the token only in the file
    tk = TokenKube(out.read_text(), tmp_path / "copy.kubeconfig")
    assert tk.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", a, "servers")["items"] == []
    # A disabled project's tokens are refused too (authenticated, not authorized), and
    # work again once it is enabled: nothing was deleted.
    kube.patch("projects", a, {"spec": {"enabled": False}})
    wait_for(lambda: _status_code(tk, a) == 403, 30, what="token refused while the project is disabled")
    kube.patch("projects", a, {"spec": {"enabled": True}})
    wait_for(lambda: _status_code(tk, a) == 200, 30, what="token accepted again")
    listing = _stratus(env, "token", "list", "--project", a).stdout
    assert "cli" in listing and alice in listing and "Active" in listing
    res = _stratus(env, "token", "revoke", "--project", a, "cli")
    assert res.returncode == 0 and "revoked" in res.stdout
    _refused_within(tk, a, REVOCATION_SECONDS)


#: The API server caches a successful token authentication for 10 s (its token cache);
#: the revoked token must fail once that has passed.
REVOCATION_SECONDS = 15


def _status_code(client, namespace) -> int:
    try:
        client.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", namespace, "servers")
        return 200
    except ApiException as exc:
        return exc.status


def _secret_gone(kube, name, namespace) -> bool:
    try:
        kube.core.read_namespaced_secret(name, namespace)
        return False
    except ApiException as exc:
        return exc.status == 404


def _refused_within(tk, namespace, seconds) -> float:
    """Poll with the token until the API server answers 401; return how long it took."""
    import time

    start = time.monotonic()

    def refused():
        try:
            tk.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", namespace, "servers")
            return False
        except ApiException as exc:
            assert exc.status == 401, exc.body
            return True

    wait_for(refused, seconds, interval=0.5, what="the revoked token to be refused (401)")
    return time.monotonic() - start


def _stratus(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stratus", *args], env=env, capture_output=True, text=True, timeout=120)


def _review(kube, token: str) -> dict:
    import kubernetes

    api = kubernetes.client.AuthenticationV1Api(kube.api)
    return api.create_token_review({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                    "spec": {"token": token}}).status.to_dict()


# --- Catalog --------------------------------------------------------------------------


def test_catalog_lists_services_and_is_read_only(kube, operator, stratus_roles, namespace, as_user):
    cat = wait_for(lambda: kube.get("catalogs", "default"), 30, what="catalog default")
    assert cat["status"]["endpoints"][0]["name"] == "kubernetes"
    kube.core.create_namespaced_service(namespace, {
        "metadata": {"name": "dash", "labels": {"stratus.dev/service": "dashboard"},
                     "annotations": {"stratus.dev/service-type": "dashboard", "stratus.dev/url": "https://dash.example.org"}},
        "spec": {"ports": [{"port": 443, "name": "https"}]}})
    entry = wait_for(lambda: next((e for e in kube.get("catalogs", "default")["status"]["endpoints"] if e["name"] == "dashboard"), None),
                     30, what="dashboard in the catalog")
    assert entry["url"] == "https://dash.example.org" and entry["type"] == "dashboard"
    res = _stratus({"KUBECONFIG": kube.kubeconfig, "PATH": "/usr/bin:/bin"}, "catalog")
    assert res.returncode == 0 and "dashboard" in res.stdout and "https://dash.example.org" in res.stdout
    anyone = as_user(user("anyone"))
    assert anyone.get("catalogs", "default")["status"]["endpoints"]
    forbidden(lambda: anyone.patch("catalogs", "default", {"metadata": {"labels": {"x": "y"}}}))
    kube.core.delete_namespaced_service("dash", namespace)
    wait_for(lambda: all(e["name"] != "dashboard" for e in kube.get("catalogs", "default")["status"]["endpoints"]), 30,
             what="dashboard gone from the catalog")
