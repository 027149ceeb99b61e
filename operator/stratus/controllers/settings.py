"""Operator-wide kopf settings, applied once at startup.

- finalizer `stratus.dev/finalizer` on objects whose deletion must clean up;
- handler progress and the last-handled spec live in annotations (prefix stratus.dev),
  so status holds only what Stratus reports;
- peering `stratus`: replicas see each other and only the one with the highest priority
  acts (one active replica; the others stand by);
- events for handler outcomes at INFO and above.
"""

from __future__ import annotations

import logging

import kopf

from ..api.registry import FINALIZER, LABEL_PREFIX

PEERING_NAME = "stratus"


def ensure_peering(name: str = PEERING_NAME) -> None:
    """Create the cluster-wide peering object if it is missing (kopf needs it to exist)."""
    from ..drivers import kube

    kube.create({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}, "clusterkopfpeerings")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=LABEL_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=LABEL_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.execution.max_workers = 16
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.batching.error_delays = [1, 2, 5, 10, 20, 30]


@kopf.on.probe(id="ready")
def ready_probe(**_) -> bool:
    return True
