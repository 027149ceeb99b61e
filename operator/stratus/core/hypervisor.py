"""A simulated hypervisor Node: the Node object kwok manages on the local control plane.

Pure builder. The local control plane (stratus.dev.cluster) creates hypervisors with it,
and the bare-metal controller creates one for a provisioned hypervisor BareMetalNode when
``STRATUS_BAREMETAL_NODES=kwok`` (on a real cluster the machine's kubelet registers it).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class HypervisorShape:
    """A simulated KubeVirt-capable node."""

    cpu: int = 32
    memory: str = "128Gi"
    pods: int = 110


def hypervisor_node(name: str, shape: HypervisorShape, labels: dict[str, str] | None = None) -> dict:
    """A simulated hypervisor: KubeVirt-schedulable, managed by kwok."""
    alloc = {"cpu": str(shape.cpu), "memory": shape.memory, "pods": str(shape.pods)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "kubevirt.io/schedulable": "true",
                "stratus.dev/hypervisor": "true",
                **(labels or {}),
            },
        },
        "spec": {},
        "status": {"allocatable": alloc, "capacity": alloc},
    }
