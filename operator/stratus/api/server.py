"""Server (Nova): a virtual machine, reconciled into a KubeVirt VirtualMachine.

The VM is sized from the Flavor, named like the Server, labelled with the Server's name
and owned by it. Status mirrors the VirtualMachineInstance with Nova's states:

    BUILD     the VM exists and its VMI is being scheduled or started
    ACTIVE    the VMI runs on a node
    SHUTOFF   powerState is Stopped and the VM is halted
    ERROR     something the user must fix (a condition says what)
    DELETING  the Server is being deleted and waits for its VM to go

The compute issue adds images and boot volumes, networks, server groups and the Nova
actions; this module only grows.
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


class PowerState(str, enum.Enum):
    RUNNING = "Running"
    STOPPED = "Stopped"


class ServerPhase(str, enum.Enum):
    BUILD = "BUILD"
    ACTIVE = "ACTIVE"
    SHUTOFF = "SHUTOFF"
    ERROR = "ERROR"
    DELETING = "DELETING"


class ServerSpec(BaseModel):
    flavor: ObjectName = Field(..., description="Name of the Flavor that sizes the server.")
    container_disk: str = Field(
        ...,
        max_length=512,
        pattern=IMAGE_REFERENCE,
        description="OCI image reference of a KubeVirt containerDisk to boot from (an ephemeral root disk).",
    )
    key_pair: ObjectName | None = Field(None, description="Name of a KeyPair in the same namespace to inject.")
    user_data: str | None = Field(
        None, max_length=USER_DATA_MAX, description="cloud-init user data (at most 65535 characters)."
    )
    power_state: PowerState = Field(PowerState.RUNNING, description="Running or Stopped.")


class Address(BaseModel):
    network: str = Field(..., description="The network the address is on.")
    address: str = Field(..., description="The IP address.")


class ServerStatus(StatusBase):
    """See the module docstring for phases."""

    node: str = Field("", description="The node the server runs on.")
    virtual_machine: str = Field("", description="The KubeVirt VirtualMachine backing the server.")
    addresses: list[Address] = Field(default_factory=list, description="The server's IP addresses.")
    launched_at: str = Field("", description="When the server last started running (RFC 3339).")
    vcpus: int = Field(0, ge=0, description="vCPUs of the flavor the VM was built with.")
    memory: str = Field("", description="Memory of the flavor the VM was built with.")


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
