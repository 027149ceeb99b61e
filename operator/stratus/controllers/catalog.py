"""Catalog: keeps the one Catalog object, `default`, listing the services Stratus runs.

Level-based: any change to a Service labelled `stratus.dev/service` (or its endpoints)
recomputes the whole list (`core.identity.catalog_endpoints`) from what exists now; the
operator also writes it once at startup, so the catalog always holds at least the
Kubernetes API.

Services the operator runs in its own process (the image service, metrics, the boot
server in development) announce themselves with `register_endpoint(...)`; a labelled
Service of the same name, when the chart deploys one, takes precedence.
"""

from __future__ import annotations

import logging
import os
import threading

import kopf
from kubernetes.client.rest import ApiException

from ..api.catalog import CATALOG_NAME, Catalog
from ..api.registry import API_VERSION, GROUP, VERSION
from ..core import identity
from ..core.conditions import set_condition
from ..core.database import engine_catalog
from ..drivers import kube
from .accesstoken import SERVER_ENV

log = logging.getLogger(__name__)
_lock = threading.Lock()
_local: dict[str, dict] = {}


def register_endpoint(name: str, url: str, type_: str = "", description: str = "") -> None:
    """Announce an endpoint this process serves; the catalog shows it from now on."""
    _local[name] = {"name": name, "url": url, "type": type_ or name, "ready": True, "description": description}
    try:
        refresh_catalog()
    except ApiException as exc:  # no catalog CRD yet, or the API is away: the next refresh includes it
        log.warning("catalog not refreshed for endpoint %s (%s %s); the next refresh includes it", name, exc.status, exc.reason)


def _ready_services() -> set[tuple[str, str]]:
    ready = set()
    for es in kube.list_("discovery.k8s.io/v1", "endpointslices", label_selector=identity.SERVICE_LABEL):
        svc = (es["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        if svc and any((ep.get("conditions") or {}).get("ready") for ep in es.get("endpoints") or []):
            ready.add((es["metadata"]["namespace"], svc))
    return ready


def refresh_catalog() -> list[dict]:
    with _lock:
        services = kube.list_("v1", "services", label_selector=identity.SERVICE_LABEL)
        api_server = os.environ.get(SERVER_ENV) or kube.api_client().configuration.host
        endpoints = identity.catalog_endpoints(api_server, services, _ready_services(), list(_local.values()))
        existing = kube.get(API_VERSION, "catalogs", CATALOG_NAME)
        if existing is None:
            existing = kube.apply({"apiVersion": API_VERSION, "kind": "Catalog", "metadata": {"name": CATALOG_NAME}, "spec": {}},
                                  "catalogs")
        Catalog.model_validate(existing)
        status = existing.get("status") or {}
        engines = engine_catalog()
        if status.get("endpoints") != endpoints or status.get("phase") != "Current" or status.get("databaseEngines") != engines:
            message = f"{len(endpoints)} service(s): {', '.join(e['name'] for e in endpoints)}"
            kube.patch_status(API_VERSION, "catalogs", CATALOG_NAME, {
                "endpoints": endpoints, "phase": "Current", "databaseEngines": engines,
                "conditions": set_condition(status.get("conditions"), "Ready", True, "Current", message)})
        return endpoints


@kopf.on.startup()
def catalog_at_startup(logger, **_) -> None:
    try:
        refresh_catalog()
    except ApiException as exc:  # e.g. the CRD is not installed yet; the watches retry
        logger.warning("catalog not written at startup: %s", exc.reason)


@kopf.on.event("", "v1", "services", labels={identity.SERVICE_LABEL: kopf.PRESENT})
@kopf.on.event("discovery.k8s.io", "v1", "endpointslices", labels={identity.SERVICE_LABEL: kopf.PRESENT})
def service_changed(**_) -> None:
    refresh_catalog()


@kopf.on.event(GROUP, VERSION, "catalogs")
def catalog_changed(type, name, **_) -> None:
    """Recreate the catalog's status if it is deleted or written by someone else."""
    if name == CATALOG_NAME and type in ("DELETED", None):
        refresh_catalog()
