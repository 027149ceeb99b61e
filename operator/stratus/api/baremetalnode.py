"""BareMetalNode (Ironic, in the style of Metal3's BareMetalHost): a physical server that
Stratus powers over its BMC (IPMI) and provisions over the network (PXE/iPXE).

Cluster-scoped, like a Node: a machine belongs to the cloud, not to a tenant namespace,
and the Kubernetes Node a hypervisor maps to carries `stratus.dev/baremetalnode=<name>`,
which is only unambiguous for a cluster-scoped kind. Secrets (BMC credentials, user
data) are therefore referenced by name and namespace.

Lifecycle (`status.provisioningState`, the states of `stratus.core.baremetal`):

    registering -> inspecting -> available -> provisioning -> provisioned
                                     ^                            |
                                     +------ deprovisioning <-----+

plus the error states (`registration-error`, `inspection-error`, `provisioning-error`,
`deprovisioning-error`, `power-management-error`, retried with backoff), `detached`,
`paused` and `deleting`. `status.phase` is the same state in one word for `kubectl get`
(every error state reads `Error`; the condition says which and why).

Power: `spec.online` is the desired power; `status.poweredOn` is what the BMC said at
`status.lastPowerCheck`, read periodically, never what was last asked.

Actions (annotations):

    stratus.dev/reboot: hard|soft    one-shot; removed when done
    stratus.dev/reinspect: ""        one-shot; re-read the hardware inventory (in available)
    stratus.dev/detached: ""         while present, the machine is left alone (no BMC access);
                                     deleting a detached node does not touch the machine
    stratus.dev/paused: ""           while present, the controller does nothing at all
"""

from __future__ import annotations

import enum
import typing as t

from kube_custom_resource import CustomResource, Scope
from pydantic import Field

from .common import READY_COLUMN, BaseModel, LabelName, ObjectName, StatusBase, printer
from .registry import VERSION

REBOOT_ANNOTATION = "stratus.dev/reboot"
REINSPECT_ANNOTATION = "stratus.dev/reinspect"
DETACHED_ANNOTATION = "stratus.dev/detached"
PAUSED_ANNOTATION = "stratus.dev/paused"
#: The label the Kubernetes Node of a hypervisor node carries (the consolidation contract).
NODE_LABEL = "stratus.dev/baremetalnode"

MAC_ADDRESS = r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$"
#: ipmi:// now; redfish family schemes are accepted by the schema and refused by the
#: operator with a condition until a Redfish backend exists.
BMC_ADDRESS = r"^(ipmi|redfish|redfish\+https?)://"


class BootMode(str, enum.Enum):
    UEFI = "UEFI"
    LEGACY = "legacy"


class Role(str, enum.Enum):
    TENANT = "tenant"
    HYPERVISOR = "hypervisor"


class ChecksumType(str, enum.Enum):
    SHA256 = "sha256"
    SHA512 = "sha512"
    MD5 = "md5"


class SecretReference(BaseModel):
    name: ObjectName = Field(..., description="Name of the Secret.")
    namespace: LabelName = Field(..., description="Namespace of the Secret.")


class Bmc(BaseModel):
    address: str = Field(
        ...,
        max_length=512,
        description="The BMC's address: ipmi://host[:port] (port 623 by default). redfish:// is reserved for later.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.matches('" + BMC_ADDRESS.replace("\\", "\\\\") + "')",
                    "message": "spec.bmc.address: unsupported scheme; use ipmi://host[:port] (redfish:// is planned)",
                }
            ]
        },
    )
    credentials: SecretReference = Field(
        ..., description="A Secret with keys `username` and `password` for the BMC."
    )


class ImageSource(BaseModel):
    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "has(self.name) != has(self.url)", "message": "spec.image: set exactly one of name (an Image) or url"},
                {"rule": "!has(self.url) || has(self.checksum)", "message": "spec.image.checksum is required with spec.image.url"},
                {"rule": "!has(self.name) || has(self.namespace)", "message": "spec.image.namespace is required with spec.image.name"},
                {
                    "rule": "!has(self.checksum) || self.checksum.size() == "
                            "(self.checksumType == 'md5' ? 32 : self.checksumType == 'sha512' ? 128 : 64)",
                    "message": "spec.image.checksum: its length does not match spec.image.checksumType "
                               "(md5: 32 hex digits, sha256: 64, sha512: 128)",
                },
            ]
        },
    }

    name: ObjectName | None = Field(None, description="An Image of the image service (status.phase active) to write to the disk.")
    namespace: LabelName | None = Field(None, description="Namespace of the Image (required with name).")
    url: str | None = Field(None, max_length=2048, pattern=r"^https?://", description="URL of a disk image to write.")
    checksum: str | None = Field(None, max_length=128, pattern=r"^[0-9a-fA-F]+$", description="Hex checksum of the image at url.")
    checksum_type: ChecksumType = Field(ChecksumType.SHA256, description="Algorithm of checksum.")


class RootDeviceHints(BaseModel):
    """Which disk to write the image to (Ironic's root device hints); all given must match."""

    device_name: str | None = Field(None, max_length=256, description="A Linux device name, e.g. /dev/sda.")
    hctl: str | None = Field(None, max_length=64, description="SCSI host:channel:target:lun.")
    model: str | None = Field(None, max_length=256, description="Vendor model string (substring).")
    vendor: str | None = Field(None, max_length=256, description="Vendor name (substring).")
    serial_number: str | None = Field(None, max_length=256, description="Disk serial number.")
    wwn: str | None = Field(None, max_length=256, description="World Wide Name.")
    min_size_gigabytes: int | None = Field(None, ge=0, description="The smallest acceptable size, in GB.")
    rotational: bool | None = Field(None, description="True for spinning disks, false for SSDs.")


class ConsumerReference(BaseModel):
    api_version: str = Field(..., max_length=253, description="API version of the consumer.")
    kind: str = Field(..., max_length=63, description="Kind of the consumer.")
    name: ObjectName = Field(..., description="Name of the consumer.")
    namespace: LabelName | None = Field(None, description="Namespace of the consumer.")


class BareMetalNodeSpec(BaseModel):
    bmc: Bmc = Field(..., description="How to reach the node's baseboard management controller.")
    boot_mac_address: str = Field(
        ..., alias="bootMACAddress", pattern=MAC_ADDRESS, description="MAC address of the NIC the node PXE-boots from (aa:bb:cc:dd:ee:ff)."
    )
    boot_mode: BootMode = Field(BootMode.UEFI, description="UEFI or legacy (BIOS) network boot.")
    online: bool = Field(False, description="Desired power: true powers the machine on, false off.")
    image: ImageSource | None = Field(None, description="The image to provision; removing it deprovisions the node.")
    user_data: SecretReference | None = Field(None, description="A Secret whose key `userData` is handed to the image's first boot.")
    root_device_hints: RootDeviceHints | None = Field(None, description="Which disk to write the image to.")
    role: Role = Field(Role.TENANT, description="tenant (handed to a user) or hypervisor (consolidation capacity).")
    consumer_ref: ConsumerReference | None = Field(None, description="The object that claimed this node.")
    project: LabelName | None = Field(None, description="The Project the node is allocated to (for metering).")
    inspect: bool = Field(True, description="Read the hardware inventory from the BMC when registering.")


class HistoryEntry(BaseModel):
    at: str = Field(..., description="When (RFC 3339).")
    from_: str | None = Field(None, alias="from", description="The state before.")
    to: str = Field(..., description="The state after.")
    event: str = Field("", description="What happened.")
    message: str = Field("", description="Details.")
    actions: list[str] = Field(default_factory=list, description="The BMC and boot actions taken.")


class ErrorInfo(BaseModel):
    state: str = Field("", description="The error state.")
    reason: str = Field("", description="CamelCase reason.")
    message: str = Field("", description="What went wrong.")
    at: str = Field("", description="When.")


class BootCallback(BaseModel):
    attempt: int = Field(0, description="The provisioning attempt the installer reported for.")
    success: bool = Field(True, description="Whether the image was written.")
    message: str = Field("", description="The installer's message.")
    at: str = Field("", description="When the callback arrived.")


class Provisioning(BaseModel):
    image_url: str = Field("", description="The image URL being (or last) provisioned.")
    checksum: str = Field("", description="Its checksum.")
    attempt: int = Field(0, description="Provisioning attempts so far.")


FreeForm = t.Annotated[
    t.Any, Field(None, json_schema_extra={"type": "object", "nullable": True, "x-kubernetes-preserve-unknown-fields": True})
]


class BareMetalNodeStatus(StatusBase):
    """See the module docstring for states."""

    provisioning_state: str = Field("", description="The state machine's state.")
    powered_on: bool | None = Field(None, description="Power as the BMC reported it at lastPowerCheck.")
    power_state: str = Field("", description="On or Off, as the BMC reported it (empty: not known yet).")
    last_power_check: str = Field("", description="When the BMC was last asked for the power state.")
    node_name: str = Field("", description="The Kubernetes Node this machine maps to (role hypervisor).")
    hardware: FreeForm = Field(None, description="The hardware inventory read at inspection.")
    error: ErrorInfo | None = Field(None, description="The last error, while in an error state.")
    error_count: int = Field(0, description="Failures of the current operation so far.")
    provisioning: Provisioning | None = Field(None, description="The image being or last provisioned.")
    boot_callback: BootCallback | None = Field(None, description="The last report of the installer.")
    operation_history: list[HistoryEntry] = Field(default_factory=list, description="The last state changes and actions.")
    machine: FreeForm = Field(None, description="The state machine's memory (internal).")


class BareMetalNode(
    CustomResource,
    version=VERSION,
    scope=Scope.CLUSTER,
    short_names=["bmn"],
    subresources={"status": {}},
    printer_columns=[
        printer("State", ".status.provisioningState"),
        printer("Online", ".spec.online", "boolean"),
        printer("Powered", ".status.poweredOn", "boolean"),
        printer("Role", ".spec.role"),
        printer("Node", ".status.nodeName", priority=1),
        printer("BMC", ".spec.bmc.address", priority=1),
        printer("Phase", ".status.phase", description="What the node is doing"),
        READY_COLUMN,
    ],
):
    """A physical server managed over its BMC and provisioned over PXE."""

    spec: BareMetalNodeSpec
    status: BareMetalNodeStatus = Field(default_factory=BareMetalNodeStatus)


def sample(
    name: str = "bm0",
    address: str = "ipmi://127.0.0.1:16241",
    secret: str = "bm0-bmc",
    namespace: str = "default",
    mac: str = "52:54:00:00:00:01",
    **spec: t.Any,
) -> dict:
    """A BareMetalNode manifest for tests and docs."""
    from .registry import API_VERSION

    body: dict[str, t.Any] = {
        "bmc": {"address": address, "credentials": {"name": secret, "namespace": namespace}},
        "bootMACAddress": mac,
        "online": False,
    }
    body.update(spec)
    return {"apiVersion": API_VERSION, "kind": "BareMetalNode", "metadata": {"name": name}, "spec": body}
