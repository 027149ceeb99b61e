"""DatabaseBackup (Trove backups): an on-demand full backup of a Database into the Bucket
its `spec.backup.bucket` names (same namespace, hence same project). PostgreSQL: a
barman-cloud base backup (WAL is archived continuously beside it, which is what makes
point-in-time recovery work); MariaDB: a mariadb-backup physical backup stream.

Phases: Pending, Running, Completed, Failed. The object is not owned by its Database, so
deleting the Database keeps its backups.
"""

from __future__ import annotations

from kube_custom_resource import CustomResource
from pydantic import Field

from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, ObjectName, StatusBase, printer
from .registry import VERSION


class DatabaseBackupSpec(BaseModel):
    database: ObjectName = Field(
        ..., description="The Database to back up (same namespace).",
        json_schema_extra={"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec.database cannot be changed"}]})


class DatabaseBackupStatus(StatusBase):
    engine: str = Field("", description="postgresql or mariadb.")
    engine_version: str = Field("", description="The engine version the backup was taken from.")
    bucket: str = Field("", description="The Bucket holding it.")
    server_name: str = Field("", description="The source's name inside the Bucket.")
    backup_id: str = Field("", description="The engine tool's backup id.")
    begin_time: str = Field("", description="When the backup started (RFC 3339).")
    end_time: str = Field("", description="When it ended; the earliest point it can restore to.")
    duration_seconds: int | None = Field(None, description="How long it took.")
    size_bytes: int | None = Field(None, description="Bytes stored in the Bucket.")
    checksum: str = Field("", description="sha256 over the stored objects' names, sizes and ETags.")


class DatabaseBackup(
    CustomResource,
    version=VERSION,
    short_names=["dbbk"],
    subresources={"status": {}},
    printer_columns=[
        printer("Database", ".spec.database"),
        printer("Size", ".status.sizeBytes", "integer"),
        printer("End", ".status.endTime"),
        PHASE_COLUMN,
        READY_COLUMN,
    ],
):
    """A backup of a Database into its Bucket."""

    spec: DatabaseBackupSpec
    status: DatabaseBackupStatus = Field(default_factory=DatabaseBackupStatus)


def sample(name: str = "orders-1", database: str = "orders") -> dict:
    from .registry import API_VERSION

    return {"apiVersion": API_VERSION, "kind": "DatabaseBackup", "metadata": {"name": name}, "spec": {"database": database}}
