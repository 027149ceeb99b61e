"""Hosts as Kubernetes sees them: Nodes (cordon, label, register, mark NotReady,
delete), the BareMetalNode power switch, KubeVirt migrations, and the one listing of
the cluster that consolidation plans from. Built on drivers/kube (same client, same
field manager); callers get plain dicts.
"""

from __future__ import annotations

from kubernetes.client.rest import ApiException

from ..api.registry import GROUP, VERSION
from ..core.consolidation.inputs import CORDONED_BY
from . import kube

BMNS = "baremetalnodes"
KUBEVIRT_GROUP, KUBEVIRT_VERSION = "kubevirt.io", "v1"
MIGRATIONS = "virtualmachineinstancemigrations"


def list_custom(group: str, version: str, plural: str, label_selector: str = "") -> list[dict]:
    """Every object of a cluster-wide listing; [] when the kind is not installed."""
    try:
        return kube.custom().list_cluster_custom_object(group, version, plural, label_selector=label_selector)["items"]
    except ApiException as exc:
        if exc.status == 404:  # the kind is not installed
            return []
        raise


def read_cluster() -> dict[str, list[dict]]:
    """Nodes, BareMetalNodes, VMIs and unfinished Pods, as plain dicts."""
    core = kube.core()
    san = kube.api_client().sanitize_for_serialization
    nodes = [san(n) for n in core.list_node().items]
    pods = [san(p) for p in core.list_pod_for_all_namespaces(field_selector="status.phase!=Succeeded,status.phase!=Failed").items]
    return {
        "nodes": nodes,
        "bmns": list_custom(GROUP, VERSION, BMNS),
        "vmis": list_custom(KUBEVIRT_GROUP, KUBEVIRT_VERSION, "virtualmachineinstances"),
        "pods": pods,
    }


# -- Nodes ---------------------------------------------------------------------------------


def get_node(name: str) -> dict | None:
    """The Node as a plain dict, or None."""
    try:
        return kube.api_client().sanitize_for_serialization(kube.core().read_node(name))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def delete_node(name: str) -> None:
    kube.core().delete_node(name)


def apply_node(node: dict) -> dict:
    return kube.apply(node, "nodes")


def label_node(name: str, labels: dict) -> None:
    kube.core().patch_node(name, {"metadata": {"labels": labels}})


def patch_node_status(name: str, status: dict) -> dict:
    """Merge-patch the Node's status subresource (the typed client's strategic merge
    would not replace the conditions list of a Node no kubelet posts for)."""
    return kube.api_client().call_api(
        f"/api/v1/nodes/{name}/status", "PATCH",
        header_params={"Content-Type": "application/merge-patch+json", "Accept": "application/json"},
        body={"status": status}, response_type="object", auth_settings=["BearerToken"], _return_http_data_only=True)


def cordon(node: str, plan: str) -> None:
    kube.core().patch_node(node, {"spec": {"unschedulable": True}, "metadata": {"annotations": {CORDONED_BY: plan}}})


def uncordon(node: str) -> None:
    try:
        kube.core().patch_node(node, {"spec": {"unschedulable": None}, "metadata": {"annotations": {CORDONED_BY: None}}})
    except ApiException as exc:
        if exc.status != 404:
            raise


# -- BareMetalNode BMC credentials, power, and KubeVirt migrations ----------------------------


def secret_data(name: str, namespace: str) -> dict | None:
    """The ``data`` of a Secret (a BMC's credentials, base64 values), or None when absent."""
    try:
        return kube.core().read_namespaced_secret(name, namespace).data or {}
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


# -- BareMetalNode power and KubeVirt migrations ---------------------------------------------


def set_online(bmn: str, online: bool) -> None:
    """The one power switch of a host: BareMetalNode.spec.online."""
    kube.custom().patch_cluster_custom_object(GROUP, VERSION, BMNS, bmn, {"spec": {"online": online}})


def list_migrations() -> list[dict]:
    return list_custom(KUBEVIRT_GROUP, KUBEVIRT_VERSION, MIGRATIONS)


def create_migration(mig: dict) -> None:
    """Create a VirtualMachineInstanceMigration; one of that name already there is fine."""
    try:
        kube.custom().create_namespaced_custom_object(KUBEVIRT_GROUP, KUBEVIRT_VERSION, mig["metadata"]["namespace"],
                                                      MIGRATIONS, mig)
    except ApiException as exc:
        if exc.status != 409:
            raise


def delete_migration(name: str, namespace: str) -> bool:
    return kube.delete(f"{KUBEVIRT_GROUP}/{KUBEVIRT_VERSION}", MIGRATIONS, name, namespace)
