"""Server (Nova): a virtual machine, reconciled into a KubeVirt VirtualMachine.

The VM is sized from the Flavor, named like the Server, labelled with the Server's name
and owned by it. Status mirrors the VirtualMachineInstance with Nova's states:

    BUILD     the VM exists and its VMI is being scheduled or started
    ACTIVE    the VMI runs on a node
    SHUTOFF   powerState is Stopped and the VM is halted
    MIGRATING a live migration (spec-driven or by annotation) is in progress
    PAUSED    powerState is Paused and the VMI reports the Paused condition
    HARD_REBOOT  a reboot is stopping and starting the VM
    REBUILD   spec.image changed: the VM stops and boots from a new root disk of the
              new image (the old root DataVolume is deleted once the server is ACTIVE)
    ERROR     something the user must fix (a condition says what)
    DELETING  the Server is being deleted and waits for its VM to go

Root disk: exactly one of `image` (an Image of the image service, cloned into a
DataVolume template named `<server>-root`), `bootVolume` (a Volume in the namespace,
attached as the first disk) or `containerDisk` (an ephemeral OCI image). The API server
refuses zero or two of them.

Actions that Nova has as API calls are one-shot annotations, removed when done:

    stratus.dev/migrate: ""|<node>   live-migrate (optionally to the named node)
    stratus.dev/reboot: soft|hard    reboot. hard stops and starts the VM (a new VMI, as
                                     `virtctl restart`); soft asks the guest through
                                     KubeVirt's softreboot subresource where it is served,
                                     and falls back to hard where it is not (the stand-ins)

Pause is declarative (powerState: Paused): KubeVirt's pause/unpause subresources where
served; on the stand-ins, the VMI annotation `standin.stratus.dev/pause-requested`,
which a kwok Stage turns into the VMI's Paused condition.

Resize is declarative: change `spec.flavor`. The rule: the VM template is updated at
once and the new size takes effect at the next start (KubeVirt applies CPU and memory
changes to a running VMI only with its LiveUpdate rollout and hotplug headroom, which
Stratus does not assume). status.vcpus / status.memory report the size applied.
"""

from __future__ import annotations

import enum

from kube_custom_resource import CustomResource
from pydantic import Field

from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, ObjectName, StatusBase, printer
from .registry import VERSION

#: An OCI image reference, e.g. quay.io/containerdisks/fedora:40 or registry:5000/img@sha256:...
IMAGE_REFERENCE = r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"

#: Nova accepts at most 64 KiB of user data.
USER_DATA_MAX = 65535

#: One-shot action annotations.
MIGRATE_ANNOTATION = "stratus.dev/migrate"
REBOOT_ANNOTATION = "stratus.dev/reboot"


class PowerState(str, enum.Enum):
    RUNNING = "Running"
    STOPPED = "Stopped"
    PAUSED = "Paused"


class ServerPhase(str, enum.Enum):
    BUILD = "BUILD"
    ACTIVE = "ACTIVE"
    SHUTOFF = "SHUTOFF"
    MIGRATING = "MIGRATING"
    PAUSED = "PAUSED"
    HARD_REBOOT = "HARD_REBOOT"
    REBUILD = "REBUILD"
    ERROR = "ERROR"
    DELETING = "DELETING"


class Network(BaseModel):
    """A network the server joins besides (or instead of) the pod network."""

    name: ObjectName = Field(..., description="Name of a Multus NetworkAttachmentDefinition in the namespace.")


class ServerSpec(BaseModel):
    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.image) ? 1 : 0) + (has(self.bootVolume) ? 1 : 0) + (has(self.containerDisk) ? 1 : 0) == 1",
                    "message": "set exactly one of spec.image, spec.bootVolume or spec.containerDisk as the root disk",
                },
                {
                    "rule": "(has(self.bootVolume) == has(oldSelf.bootVolume)) && (!has(self.bootVolume) || self.bootVolume == oldSelf.bootVolume)",
                    "message": "spec.bootVolume cannot be changed; create a new server",
                },
            ]
        },
    }

    flavor: ObjectName = Field(..., description="Name of the Flavor that sizes the server (change it to resize).")
    image: ObjectName | None = Field(None, description="Name of an Image in the namespace to clone the root disk from.")
    boot_volume: ObjectName | None = Field(None, description="Name of a Volume in the namespace to boot from.")
    container_disk: str | None = Field(
        None,
        max_length=512,
        pattern=IMAGE_REFERENCE,
        description="OCI image reference of a KubeVirt containerDisk to boot from (an ephemeral root disk).",
    )
    key_pair: ObjectName | None = Field(None, description="Name of a KeyPair in the same namespace to inject.")
    user_data: str | None = Field(
        None, max_length=USER_DATA_MAX, description="cloud-init user data (at most 65535 characters)."
    )
    networks: list[Network] = Field(
        default_factory=list,
        max_length=16,
        description="Multus networks to join; empty means the pod network only. Each network appears once.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    server_group: ObjectName | None = Field(
        None,
        description="Name of a ServerGroup in the namespace whose policy places this server. Cannot be changed.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "spec.serverGroup cannot be changed once set"}
            ]
        },
    )
    power_state: PowerState = Field(
        PowerState.RUNNING, description="Running, Stopped, or Paused (the VMI is kept in memory but does not run)."
    )


class Address(BaseModel):
    network: str = Field(..., description="The network the address is on.")
    address: str = Field(..., description="The IP address.")


class AttachedVolume(BaseModel):
    name: str = Field(..., description="The Volume's name.")
    claim_name: str = Field("", description="The PersistentVolumeClaim behind it.")
    boot: bool = Field(False, description="Whether this is the boot volume.")
    read_only: bool = Field(False, description="Whether it is attached read-only.")


class ServerStatus(StatusBase):
    """See the module docstring for phases."""

    node: str = Field("", description="The node the server runs on.")
    virtual_machine: str = Field("", description="The KubeVirt VirtualMachine backing the server.")
    addresses: list[Address] = Field(default_factory=list, description="The server's IP addresses.")
    launched_at: str = Field("", description="When the server last started running (RFC 3339).")
    vcpus: int = Field(0, ge=0, description="vCPUs of the flavor the VM was built with.")
    memory: str = Field("", description="Memory of the flavor the VM was built with.")
    flavor: str = Field("", description="The flavor the VM was built with.")
    volumes: list[AttachedVolume] = Field(default_factory=list, description="Volumes attached to the server.")
    migration: str = Field("", description="The last live migration (a VirtualMachineInstanceMigration).")
    root_disk: str = Field("", description="The DataVolume of an image-backed root disk in use.")


class Server(
    CustomResource,
    version=VERSION,
    short_names=["srv"],
    subresources={"status": {}},
    printer_columns=[
        printer("Flavor", ".spec.flavor"),
        PHASE_COLUMN | {"name": "Status"},
        printer("Node", ".status.node"),
        printer("Address", ".status.addresses[0].address"),
        READY_COLUMN,
    ],
):
    """A virtual machine."""

    spec: ServerSpec
    status: ServerStatus = Field(default_factory=ServerStatus)
