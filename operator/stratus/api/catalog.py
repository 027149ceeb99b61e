"""Catalog (Keystone's service catalog): one cluster-scoped object, `default`, whose
status lists the services the operator runs. Users read it (every authenticated user
may, through the `stratus-catalog-reader` role); only the operator writes it.

The entries are the Kubernetes API server and every Service labelled
`stratus.dev/service` (the dashboard, metrics, image service, boot server and object
store the chart deploys), kept current by a watch on those Services. A Service says
what it is with the annotations `stratus.dev/service-type` and, where the address users
should use differs from the in-cluster one, `stratus.dev/url`.
"""

from __future__ import annotations

from kube_custom_resource import CustomResource, Scope
from pydantic import Field

from .common import BaseModel, StatusBase, printer
from .registry import VERSION

CATALOG_NAME = "default"


class Endpoint(BaseModel):
    name: str = Field(..., description="The service's name, e.g. dashboard.")
    type: str = Field("", description="What it is: kubernetes, dashboard, metrics, image, boot, object-store, ...")
    url: str = Field("", description="Where to reach it.")
    ready: bool = Field(False, description="Whether the service has a ready endpoint.")
    description: str = Field("", description="A line about the service.")


class CatalogSpec(BaseModel):
    """Nothing to set: the catalog is the operator's report."""


class DatabaseEngine(BaseModel):
    engine: str = Field(..., description="postgresql or mariadb.")
    versions: list[str] = Field(default_factory=list, description="Versions a Database may ask for.")
    default_version: str = Field("", description="The version used when a Database names none.")
    port: int = Field(0, description="The engine's port.")
    parameters: list[str] = Field(default_factory=list, description="Parameters a Database may set.")


class CatalogStatus(StatusBase):
    endpoints: list[Endpoint] = Field(
        default_factory=list,
        description="The services, by name.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    database_engines: list[DatabaseEngine] = Field(
        default_factory=list, description="Database engines and versions on offer (Trove's datastores).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["engine"]})


class Catalog(
    CustomResource,
    version=VERSION,
    scope=Scope.CLUSTER,
    short_names=["svccat"],
    subresources={"status": {}},
    printer_columns=[printer("Services", ".status.endpoints[*].name"), printer("Phase", ".status.phase")],
):
    """The service catalog (one object, `default`)."""

    spec: CatalogSpec = Field(default_factory=CatalogSpec)
    status: CatalogStatus = Field(default_factory=CatalogStatus)
