"""Metering's I/O beyond the ledger store (``drivers.ledger_store``) and the keys
(``drivers.ledger_keys``): where the usage tracker's state is saved, and the listings the
tracker is reconciled with.

Tracker state: ``.metering-state.json`` in the ledger directory, replaced atomically
(temporary file, fsync, rename, fsync of the directory), or gzipped in ConfigMap
``stratus-metering-state`` with the S3 store, which has no local disk.
"""

from __future__ import annotations

import base64
import gzip
import os
import pathlib

from kubernetes.client.rest import ApiException

from . import kube

STATE_CONFIGMAP = "stratus-metering-state"
STATE_FILE = ".metering-state.json"


class FileState:
    """The tracker state as one JSON file, replaced atomically."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def load(self) -> str | None:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None

    def save(self, text: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ConfigMapState:
    """The tracker state gzipped in a ConfigMap (for the S3 store, which has no local disk)."""

    def __init__(self, namespace: str, name: str = STATE_CONFIGMAP) -> None:
        self.namespace, self.name = namespace, name

    def load(self) -> str | None:
        try:
            cm = kube.core().read_namespaced_config_map(self.name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        data = (cm.binary_data or {}).get("state.json.gz")
        return gzip.decompress(base64.b64decode(data)).decode() if data else None

    def save(self, text: str) -> None:
        blob = base64.b64encode(gzip.compress(text.encode(), 6)).decode()
        kube.apply_core({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": self.name, "namespace": self.namespace},
                         "binaryData": {"state.json.gz": blob}})


def list_kind(group: str, version: str, plural: str) -> list[dict] | None:
    """Every object of a metered kind, cluster-wide; None when the kind is not installed
    (nothing of it can then be judged gone)."""
    try:
        return kube.custom().list_cluster_custom_object(group, version, plural)["items"]
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def project_namespaces(label: str) -> dict[str, list[str]]:
    """namespace -> [the Project that labelled it], as the kopf index holds it."""
    namespaces = kube.core().list_namespace(label_selector=label).items
    return {n.metadata.name: [n.metadata.labels[label]] for n in namespaces}
