"""DataCluster (Sahara): a data-processing cluster (Apache Spark standalone) of node groups.

Node groups are Stackable-style role groups: one ``master`` group with exactly one node and
any number of ``worker`` groups, each of ``count`` Pods sized by a Flavor. Framework and
version come from the list the operator publishes (``stratus.core.dataprocessing.FRAMEWORKS``);
configuration keys are checked against the Spark daemon settings Stratus knows, by the API
server (CEL, naming the key) and again by the operator (which also checks the role).

Phases (Sahara's): Validating, Spawning (pods being made), Configuring (pods up, the master
not answering yet), Starting (the master answers, workers still registering), Active,
Scaling (a group's count changed after Active), Stopped (``spec.stopped``), Error, Deleting.
"""

from __future__ import annotations

import enum

from kube_custom_resource import CustomResource
from pydantic import Field

from ..core.dataprocessing import DAEMON_KEYS, FRAMEWORKS
from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, LabelName, ObjectName, Quantity, StatusBase, printer
from .registry import VERSION

_KNOWN = "[" + ", ".join(f"'{k}'" for k in sorted(DAEMON_KEYS)) + "]"


def _config_field(where: str):
    return Field(
        default_factory=dict, max_length=32,
        description=f"Spark daemon settings for {where} (key -> value); only known keys: {', '.join(sorted(DAEMON_KEYS))}.",
        json_schema_extra={"maxProperties": 32, "x-kubernetes-validations": [{
            "rule": f"self.all(k, k in {_KNOWN})",
            "messageExpression": f"'{where}: unknown Spark setting ' + self.filter(k, !(k in {_KNOWN}))[0] + '; see the field description for the known keys'",
        }]},
    )


class Framework(str, enum.Enum):
    SPARK = "spark"


class Role(str, enum.Enum):
    MASTER = "master"
    WORKER = "worker"


class AntiAffinity(str, enum.Enum):
    PREFERRED = "Preferred"
    REQUIRED = "Required"


class NodeGroup(BaseModel):
    name: LabelName = Field(..., max_length=20, description="The group's name (part of its Pods' names).")
    role: Role = Field(..., description="master (exactly one group, count 1) or worker.")
    count: int = Field(..., ge=0, le=100, description="How many nodes; change it to scale a worker group.")
    flavor: ObjectName = Field(..., description="The Flavor that sizes each node (vCPUs become Spark cores, RAM its memory).")
    anti_affinity: AntiAffinity | None = Field(None, description="Spread the group's nodes over hosts: Preferred or Required.")
    config: dict[str, str] = _config_field("spec.nodeGroups[].config")


class DataClusterSpec(BaseModel):
    model_config = {
        "extra": "forbid",
        "json_schema_extra": {"x-kubernetes-validations": [
            {"rule": "self.nodeGroups.filter(g, g.role == 'master').size() == 1",
             "message": "spec.nodeGroups must have exactly one group with role master"},
            {"rule": "self.nodeGroups.all(g, g.role != 'master' || g.count == 1)",
             "message": "spec.nodeGroups: the master group's count must be 1"},
            {"rule": "self.framework == oldSelf.framework && self.version == oldSelf.version",
             "message": "spec.framework and spec.version cannot be changed; create a new DataCluster"},
        ]},
    }

    framework: Framework = Field(Framework.SPARK, description="The data-processing framework (spark).")
    version: str = Field(..., description=f"The framework version, one of those the operator offers: {', '.join(v for vs in FRAMEWORKS.values() for v in vs)}.",
                         json_schema_extra={"enum": sorted({v for vs in FRAMEWORKS.values() for v in vs})})
    node_groups: list[NodeGroup] = Field(
        ..., min_length=1, max_length=16, description="The node groups (one master group, worker groups).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    config: dict[str, str] = _config_field("spec.config")
    daemon_memory: Quantity = Field("512Mi", description="Heap of each master and worker daemon (SPARK_DAEMON_MEMORY); the rest of a worker's flavor RAM is offered to executors.")
    image: str | None = Field(None, max_length=512, description="The Spark image on a real cluster (Spark plus the stratus package); a default per version when unset.")
    stopped: bool = Field(False, description="Stop every node (the spec is kept); set false to start again.")


class GroupStatus(BaseModel):
    name: str = Field(..., description="The node group.")
    role: str = Field("", description="master or worker.")
    desired: int = Field(0, description="Nodes wanted.")
    ready: int = Field(0, description="Nodes whose daemon is up (workers: registered ALIVE with the master).")


class DataClusterStatus(StatusBase):
    master_url: str = Field("", description="The submit address (spark://host:port).")
    web_ui: str = Field("", description="The master's web UI.")
    node_groups: list[GroupStatus] = Field(default_factory=list, description="Ready and desired nodes per group.")
    workers: str = Field("", description="Ready/desired workers, for kubectl get.")
    cores: int = Field(0, description="Cores the registered workers offer.")
    nodes: int = Field(0, description="Nodes up (the master answering plus registered workers); what metering counts.")


class DataCluster(
    CustomResource,
    version=VERSION,
    short_names=["dcl"],
    subresources={"status": {}},
    printer_columns=[
        printer("Framework", ".spec.framework"),
        printer("Version", ".spec.version"),
        printer("Workers", ".status.workers"),
        PHASE_COLUMN,
        READY_COLUMN,
        printer("Master", ".status.masterUrl", priority=1),
    ],
):
    """A Spark cluster of node groups."""

    spec: DataClusterSpec
    status: DataClusterStatus = Field(default_factory=DataClusterStatus)


def sample(name: str = "spark", workers: int = 2, flavor: str = "m1.small", **spec) -> dict:
    """A DataCluster manifest for tests and docs."""
    from .registry import API_VERSION

    body = {"framework": "spark", "version": FRAMEWORKS["spark"][0],
            "nodeGroups": [{"name": "master", "role": "master", "count": 1, "flavor": flavor},
                           {"name": "workers", "role": "worker", "count": workers, "flavor": flavor}]}
    body.update(spec)
    return {"apiVersion": API_VERSION, "kind": "DataCluster", "metadata": {"name": name}, "spec": body}
