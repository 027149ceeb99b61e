"""Stack (Heat): a HOT template run unchanged over Stratus kinds.

The template comes inline (`spec.template`) or from a ConfigMap key
(`spec.templateFrom`); the files it reads (`get_file` targets, nested templates) from
`spec.files` or whole ConfigMaps (`spec.filesFrom`, one file per key); an environment
(parameters, parameter_defaults, resource_registry) inline or from a ConfigMap key;
parameters in `spec.parameters`, and hidden ones from Secrets (`spec.parametersFrom`),
whose values never appear in status, events or logs.

The operator validates the whole template before it creates anything (errors name the
path in the template), then creates the children in dependency order, each owned by the
Stack and labelled `stratus.dev/stack` / `stratus.dev/stack-resource`, and reports
Heat's states:

    CREATE_IN_PROGRESS, CREATE_COMPLETE, CREATE_FAILED,
    UPDATE_IN_PROGRESS, UPDATE_COMPLETE, UPDATE_FAILED,
    ROLLBACK_IN_PROGRESS, ROLLBACK_COMPLETE, ROLLBACK_FAILED,
    DELETE_IN_PROGRESS, DELETE_FAILED

Changing the spec updates the stack (in place where the kind allows, replacing where it
does not). A failure rolls back (a failed create deletes what it made; a failed update
returns to the last template that completed) unless `spec.rollback` is false. Deletion
goes in reverse dependency order and releases resources whose deletion_policy is Retain.
"""

from __future__ import annotations

from kube_custom_resource import CustomResource
from pydantic import Field

from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, ObjectName, StatusBase, printer
from .registry import VERSION

STATES = ("CREATE_IN_PROGRESS", "CREATE_COMPLETE", "CREATE_FAILED", "UPDATE_IN_PROGRESS", "UPDATE_COMPLETE",
          "UPDATE_FAILED", "ROLLBACK_IN_PROGRESS", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_IN_PROGRESS",
          "DELETE_FAILED")


class KeyRef(BaseModel):
    name: ObjectName = Field(..., description="The object's name (in the Stack's namespace).")
    key: str = Field(..., min_length=1, max_length=253, description="The key within it.")


class TemplateSource(BaseModel):
    config_map_key_ref: KeyRef = Field(..., description="A ConfigMap key holding the YAML.")


class FilesSource(BaseModel):
    config_map: ObjectName = Field(..., description="A ConfigMap: every key is a file of that name.")


class HiddenParameter(BaseModel):
    name: str = Field(..., min_length=1, max_length=255, description="The template parameter.")
    secret_key_ref: KeyRef = Field(..., description="The Secret key holding its value (never echoed).")


class StackSpec(BaseModel):
    model_config = {
        "extra": "forbid",
        "json_schema_extra": {"x-kubernetes-validations": [
            {"rule": "has(self.template) != has(self.templateFrom)",
             "message": "set exactly one of spec.template or spec.templateFrom"},
            {"rule": "!has(self.environment) || !has(self.environmentFrom)",
             "message": "set at most one of spec.environment or spec.environmentFrom"},
        ]},
    }

    template: str | None = Field(None, max_length=524288, description="The HOT template (YAML or JSON).")
    template_from: TemplateSource | None = Field(None, description="Where to read the template instead.")
    files: dict[str, str] = Field(default_factory=dict, description="Files the template reads (get_file, nested templates), by name.")
    files_from: list[FilesSource] = Field(default_factory=list, max_length=32, description="ConfigMaps whose keys are more files.")
    environment: str | None = Field(None, max_length=262144, description="A Heat environment (YAML): parameters, parameter_defaults, resource_registry.")
    environment_from: TemplateSource | None = Field(None, description="Where to read the environment instead.")
    parameters: dict[str, str] = Field(default_factory=dict, description="Parameter values (strings, as Heat takes them; JSON for json parameters).")
    parameters_from: list[HiddenParameter] = Field(
        default_factory=list, max_length=128, description="Parameters read from Secrets.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    rollback: bool = Field(True, description="Roll back a failed create or update (false leaves it FAILED for inspection).")
    timeout_minutes: int = Field(60, ge=1, le=1440, description="A create or update not COMPLETE by then fails.")
    retry: int = Field(0, ge=0, description="Bump to retry a FAILED (or rolled back) stack with the same template.")


class ResourceStatus(BaseModel):
    name: str = Field(..., description="The resource's path in the stack (group.0, nested.server).")
    type: str = Field("", description="Its Heat type.")
    state: str = Field("", description="Heat's resource state, e.g. CREATE_COMPLETE.")
    reason: str = Field("", description="Why, in words.")
    objects: list[str] = Field(default_factory=list, description="The Stratus objects it owns, as Kind/name.")


class OutputStatus(BaseModel):
    name: str = Field(..., description="The output's name.")
    value: str = Field("", description="The value (JSON for lists and maps); empty when secret.")
    secret: bool = Field(False, description="The value is in the Secret named by status.outputsSecret instead.")
    error: str = Field("", description="Why the output could not be computed.")


class Attachment(BaseModel):
    volume: str = Field(..., description="The Volume.")
    server: str = Field(..., description="The Server it is attached to by the stack.")
    resource: str = Field("", description="The stack resource that wants it (a VolumeAttachment or a Server's block devices).")


class StackStatus(StatusBase):
    """phase is the Heat stack state (see the module docstring)."""

    stack_status_reason: str = Field("", description="Why the stack is in its state.")
    resources: list[ResourceStatus] = Field(default_factory=list, description="Every resource and its state.")
    outputs: list[OutputStatus] = Field(default_factory=list, description="The template's outputs.")
    outputs_secret: str = Field("", description="The Secret with outputs marked secret.")
    attachments: list[Attachment] = Field(default_factory=list, description="Volume attachments the stack made.")
    warnings: list[str] = Field(default_factory=list, description="Properties accepted but not honoured, and similar.")
    action: str = Field("", description="CREATE, UPDATE, ROLLBACK or DELETE: what the stack is doing or did last.")
    rollback_generation: int = Field(0, ge=0, description="The generation whose failure is being (or was) rolled back.")
    complete_generation: int = Field(0, ge=0, description="The last generation that reached COMPLETE.")
    started_at: str = Field("", description="When the current action began (RFC 3339).")


class Stack(
    CustomResource,
    version=VERSION,
    short_names=["stk"],
    subresources={"status": {}},
    printer_columns=[
        PHASE_COLUMN | {"name": "Status"},
        printer("Reason", ".status.stackStatusReason", priority=1),
        READY_COLUMN,
    ],
):
    """An orchestration stack from a Heat template."""

    spec: StackSpec
    status: StackStatus = Field(default_factory=StackStatus)


SAMPLE_TEMPLATE = """heat_template_version: 2018-08-31
parameters:
  flavor: {type: string, default: m1.small, constraints: [{custom_constraint: nova.flavor}]}
  size: {type: number, default: 1, constraints: [{range: {min: 1, max: 100}}]}
resources:
  password: {type: OS::Heat::RandomString, properties: {length: 16}}
  data: {type: OS::Cinder::Volume, properties: {size: {get_param: size}}}
  web:
    type: OS::Nova::Server
    properties:
      flavor: {get_param: flavor}
      image: cirros
      user_data_format: RAW
      user_data:
        str_replace:
          template: "#cloud-config\\npassword: $PW\\n"
          params: {$PW: {get_attr: [password, value]}}
  attach:
    type: OS::Cinder::VolumeAttachment
    properties: {instance_uuid: {get_resource: web}, volume_id: {get_resource: data}}
outputs:
  address: {value: {get_attr: [web, first_address]}}
"""


def sample(name: str = "web", **spec) -> dict:
    """A Stack manifest for tests and docs: a server with a volume and a generated password."""
    from .registry import API_VERSION

    body = {"template": SAMPLE_TEMPLATE, "parameters": {"flavor": "m1.small"}}
    body.update(spec)
    return {"apiVersion": API_VERSION, "kind": "Stack", "metadata": {"name": name}, "spec": body}
