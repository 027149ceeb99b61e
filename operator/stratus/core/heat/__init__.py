"""A pure HOT (Heat Orchestration Template) engine: templates, parameters, intrinsics,
conditions, the dependency graph, nested templates and ResourceGroups, and the mapping
of Heat resource types onto Stratus kinds. No I/O: the Stack controller lists what
exists and applies what the engine says.

    stack = Stack(template_text, name=..., namespace=..., files=..., environment=...,
                  parameters=..., catalog={"nova.flavor": {...}, ...})
    stack.errors                      every HeatError, each naming its path
    plan.step(stack, observed, ...)   what to create, change, replace, delete next
"""

from .errors import HeatError, ValidationFailed
from .plan import COMPLETE, FAILED, IN_PROGRESS, INIT, Step, deletion, preview, step
from .stack import ANNOTATION_RESOURCE, LABEL_RESOURCE, LABEL_STACK, Stack, object_name
from .types import CLUSTER_KINDS, PLURALS, TYPES

__all__ = ["HeatError", "ValidationFailed", "Stack", "Step", "step", "deletion", "preview", "object_name",
           "COMPLETE", "FAILED", "IN_PROGRESS", "INIT", "LABEL_STACK", "LABEL_RESOURCE", "ANNOTATION_RESOURCE",
           "PLURALS", "CLUSTER_KINDS", "TYPES"]
