"""DataJob (Sahara EDP): an application run on a DataCluster, reading and writing Buckets.

The application is inline Python (small scripts, kept in a ConfigMap), or a Python file or a
JAR object in a Bucket of the same namespace. ``inputs`` and ``outputs`` name Buckets (of the
same project: references carry no namespace) and paths in them; ``{name}`` in ``args`` becomes
that source's ``s3a://`` URL, as Sahara substitutes data sources. The operator hands Spark each
Bucket's endpoint and credentials through the driver's environment (resolved from the Bucket's
Secret and ConfigMap); they never appear in logs, events or status.

Phases: PENDING, RUNNING, SUCCEEDED, FAILED, KILLED (kill with the annotation
``stratus.dev/kill``, or delete the DataJob). A failed attempt is retried ``retries`` times.
"""

from __future__ import annotations

import typing as t

from kube_custom_resource import CustomResource
from pydantic import Field

from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, LabelName, ObjectName, Quantity, StatusBase, printer
from .registry import VERSION

INLINE_MAX = 65536


class Application(BaseModel):
    model_config = {
        "extra": "forbid",
        "json_schema_extra": {"x-kubernetes-validations": [
            {"rule": "has(self.inline) != has(self.bucket)",
             "message": "spec.application: set exactly one of inline or bucket (with key)"},
            {"rule": "has(self.bucket) == has(self.key)",
             "message": "spec.application.key is required with spec.application.bucket (and only with it)"},
        ]},
    }

    inline: str | None = Field(None, max_length=INLINE_MAX, description="The Python program itself (small scripts).")
    file_name: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+\.py$", description="The inline program's file name (main.py when unset).")
    bucket: ObjectName | None = Field(None, description="A Bucket in this namespace holding the application.")
    key: str | None = Field(None, min_length=1, max_length=1024, pattern=r"^[^\s]+\.(py|jar)$", description="The object key of a .py or .jar file in that Bucket.")


class DataSource(BaseModel):
    name: LabelName = Field(..., max_length=32, description="Referred to as {name} in args.")
    bucket: ObjectName = Field(..., description="A Bucket in this namespace.")
    path: str = Field("", max_length=1024, pattern=r"^[^\s{}]*$", description="A key prefix or object key in the bucket.")


class DriverSize(BaseModel):
    memory: Quantity = Field("512Mi", description="The driver's heap.")


class ExecutorSize(BaseModel):
    instances: int = Field(1, ge=1, le=100, description="How many executors.")
    cores: int = Field(1, ge=1, le=64, description="Cores per executor.")
    memory: Quantity = Field("512Mi", description="Heap per executor.")


_CONF_KEY = r"^spark[.][A-Za-z0-9_.-]+$"


class DataJobSpec(BaseModel):
    model_config = {
        "extra": "forbid",
        "json_schema_extra": {"x-kubernetes-validations": [
            {"rule": "self.clusterName == oldSelf.clusterName && self.application == oldSelf.application",
             "message": "spec.clusterName and spec.application cannot be changed; create a new DataJob"},
            {"rule": "!has(self.application.key) || !self.application.key.endsWith('.jar') || has(self.mainClass)",
             "message": "spec.mainClass is required for a JAR application"},
        ]},
    }

    cluster_name: ObjectName = Field(..., description="The DataCluster in this namespace to run on.")
    application: Application = Field(..., description="What to run.")
    main_class: str | None = Field(None, max_length=256, pattern=r"^[A-Za-z_$][\w$.]*$", description="The main class of a JAR application.")
    args: list[t.Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64, description="Arguments; {name} becomes the s3a URL of that input or output.")
    conf: dict[str, t.Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict, max_length=64, description="Spark properties of the application (spark.*); credentials never go here.",
        json_schema_extra={"maxProperties": 64, "x-kubernetes-validations": [
            {"rule": "self.all(k, k.matches('" + _CONF_KEY + "') && !k.startsWith('spark.hadoop.fs.s3a.'))",
             "messageExpression": "'spec.conf: ' + self.filter(k, !k.matches('" + _CONF_KEY + "') || k.startsWith('spark.hadoop.fs.s3a.'))[0] + ' is not allowed: keys start with spark., and s3a settings come from the Buckets'"}]},
    )
    inputs: list[DataSource] = Field(default_factory=list, max_length=16, description="Where the job reads.",
                                     json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    outputs: list[DataSource] = Field(default_factory=list, max_length=16, description="Where the job writes.",
                                      json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    driver: DriverSize = Field(default_factory=DriverSize, description="The driver's size.")
    executor: ExecutorSize = Field(default_factory=ExecutorSize, description="The executors' count and size.")
    retries: int = Field(0, ge=0, le=10, description="Run again this many times after a failed attempt.")
    timeout_seconds: int | None = Field(None, ge=1, le=604800, description="Fail (DeadlineExceeded) when the job runs longer.")


class DataJobStatus(StatusBase):
    application_id: str = Field("", description="Spark's application id on the master.")
    attempt: int = Field(0, description="The current attempt (1 = the first run).")
    start_time: str = Field("", description="When the first attempt was submitted (RFC 3339).")
    completion_time: str = Field("", description="When the job ended (RFC 3339).")
    driver_pod: str = Field("", description="The current attempt's driver Pod.")
    driver_log_tail: str = Field("", description="The last lines of the driver's output once it ended.")
    reason: str = Field("", description="Why it failed (the exception's message), or was killed.")


class DataJob(
    CustomResource,
    version=VERSION,
    short_names=["djob"],
    subresources={"status": {}},
    printer_columns=[
        printer("Cluster", ".spec.clusterName"),
        printer("Application", ".status.applicationId"),
        printer("Attempt", ".status.attempt", "integer"),
        PHASE_COLUMN,
        READY_COLUMN,
        printer("Reason", ".status.reason", priority=1),
    ],
):
    """A Spark application run on a DataCluster."""

    spec: DataJobSpec
    status: DataJobStatus = Field(default_factory=DataJobStatus)


def sample(name: str = "wordcount", cluster: str = "spark", **spec) -> dict:
    from .registry import API_VERSION

    body = {"clusterName": cluster, "application": {"inline": "print('hello')\n"}}
    body.update(spec)
    return {"apiVersion": API_VERSION, "kind": "DataJob", "metadata": {"name": name}, "spec": body}
