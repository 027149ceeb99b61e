"""Database (Trove): a managed PostgreSQL or MariaDB with declarative databases, users and
parameters, a connection Secret and Service named like it, continuous backups into a
Bucket of the project, and restore (from a backup, or a point in time) as a new Database.

Phases (Trove's instance states): BUILD, ACTIVE, BACKUP, RESTORE, RESIZE, UPGRADE, ERROR.

Rules the API server enforces (CEL, messages naming the field):
- engine is postgresql or mariadb; version is one the engine catalog lists;
- storage.size grows, never shrinks; engine cannot change;
- instances >= 1; parameters only from the engine's settable list;
- a restore names either a backup or a source Database with a target time.
"""

from __future__ import annotations

import enum
import typing as t

from kube_custom_resource import CustomResource
from pydantic import Field

from ..core.database import ENGINES
from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, ObjectName, Quantity, StatusBase, printer
from .registry import VERSION

SQL_NAME = r"^[a-z][a-z0-9_]{0,62}$"
SqlName = t.Annotated[str, Field(min_length=1, max_length=63, pattern=SQL_NAME)]


def _list(items) -> str:
    return "[" + ", ".join(f"'{i}'" for i in sorted(items)) + "]"


def _version_rule() -> dict:
    clauses = " && ".join(f"(self.engine != '{e.name}' || self.version in {_list(e.versions)})" for e in ENGINES.values())
    listing = "; ".join(f"{e.name}: {', '.join(e.versions)}" for e in ENGINES.values())
    return {"rule": f"!has(self.version) || ({clauses})",
            "message": f"spec.version is not offered for this engine (offered: {listing})"}


def _parameter_rules() -> list[dict]:
    """Per engine, on the spec (the item rule below names an unknown name; this one catches
    a name another engine knows). CEL's cost budget rules out a message built from the list."""
    return [{"rule": f"self.engine != '{e.name}' || !has(self.parameters) || self.parameters.all(p, p.name in {_list(e.parameters)})",
             "message": f"spec.parameters names a parameter that is not settable on {e.name}; "
                        "the Catalog's status.databaseEngines lists those that are"} for e in ENGINES.values()]


def _known_parameter_rule() -> dict:
    known = set().union(*(e.parameters for e in ENGINES.values()))
    return {"rule": f"self.name in {_list(known)}",
            "messageExpression": "'spec.parameters: ' + self.name + ' is not a settable parameter (unknown, read-only "
                                 "or managed by Stratus); the Catalog lists those that are'"}


class Engine(str, enum.Enum):
    POSTGRESQL = "postgresql"
    MARIADB = "mariadb"


class Privileges(str, enum.Enum):
    READ_WRITE = "ReadWrite"
    READ_ONLY = "ReadOnly"


class Storage(BaseModel):
    size: Quantity = Field(
        ..., description="Size of each instance's volume, e.g. \"10Gi\". Grows, never shrinks.",
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": "quantity(self).compareTo(quantity(oldSelf)) >= 0",
            "message": "spec.storage.size cannot shrink; restore into a new, smaller Database instead"}]},
    )
    volume_type: ObjectName | None = Field(
        None, description="The VolumeType; the default VolumeType when unset (or the cluster's default class).",
        json_schema_extra={"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec.storage.volumeType cannot be changed"}]},
    )


class DatabaseEntry(BaseModel):
    name: SqlName = Field(..., description="The database's name.")


class Grant(BaseModel):
    database: SqlName = Field(..., description="A database from spec.databases.")
    privileges: Privileges = Field(Privileges.READ_WRITE, description="ReadWrite (all on the database) or ReadOnly.")


class SecretKeyRef(BaseModel):
    name: ObjectName = Field(..., description="A Secret in the namespace.")
    key: str = Field("password", max_length=253, description="The key holding the password.")


class User(BaseModel):
    name: SqlName = Field(..., description="The login name.")
    password_secret: SecretKeyRef | None = Field(
        None, description="Take the password from this Secret; when unset one is generated into the Secret <db>-user-<name>.")
    grants: list[Grant] = Field(
        default_factory=list, description="Databases the user may use; no other database is open to the user.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["database"]})


class Parameter(BaseModel):
    model_config = {"extra": "forbid", "json_schema_extra": {"x-kubernetes-validations": [_known_parameter_rule()]}}

    name: str = Field(..., min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9_]*$", description="The engine's name for it.")
    value: str = Field(..., max_length=256, description="Its value, as the engine writes it (e.g. \"8MB\").")


class BackupSettings(BaseModel):
    bucket: ObjectName = Field(..., description="A Bucket in the same namespace: WAL is archived and backups written there.")
    schedule: str | None = Field(
        None, max_length=100,
        description="Take a DatabaseBackup on this cron schedule (UTC; five fields, or six with seconds last), e.g. \"0 3 * * *\".")
    retention: int | None = Field(
        None, ge=1, le=1000, description="Keep this many completed scheduled backups; older ones are deleted with their data.")


_RESTORE_RULES = [
    {"rule": "self == oldSelf", "message": "spec.restore cannot be changed"},
    {"rule": "has(self.backup) != has(self.database)",
     "message": "spec.restore names exactly one of backup (a DatabaseBackup) or database (a source Database)"},
    {"rule": "!has(self.targetTime) || has(self.database)",
     "message": "spec.restore.targetTime needs spec.restore.database (the Database whose WAL is replayed)"},
]


class RestoreSpec(BaseModel):

    backup: ObjectName | None = Field(None, description="A DatabaseBackup in the namespace to start from.")
    database: ObjectName | None = Field(None, description="A source Database in the namespace (point-in-time recovery).")
    target_time: str | None = Field(
        None, description="RFC 3339 UTC time to recover to (PostgreSQL); the latest archived point when unset.",
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$")


class DatabaseSpec(BaseModel):
    model_config = {"extra": "forbid", "json_schema_extra": {"x-kubernetes-validations": [
        _version_rule(), *_parameter_rules(),
        {"rule": "self.engine == oldSelf.engine", "message": "spec.engine cannot be changed; restore into a new Database"},
        {"rule": "self.engine == 'postgresql' || self.instances == 1",
         "message": "spec.instances above 1 (replicas) is offered for postgresql only so far"},
        {"rule": "!has(self.restore) || self.engine == 'postgresql' || !has(self.restore.targetTime)",
         "message": "spec.restore.targetTime (point-in-time recovery) is offered for postgresql only"},
    ]}}

    engine: Engine = Field(..., description="postgresql or mariadb.")
    version: str | None = Field(None, max_length=16, description="An engine version the Catalog lists; its default when unset.")
    flavor: ObjectName | None = Field(None, description="A Flavor: each instance gets its vCPUs and RAM.")
    storage: Storage = Field(..., description="Each instance's volume.")
    instances: int = Field(1, ge=1, le=9, description="1 = single; more = a primary plus streaming replicas (PostgreSQL).")
    databases: list[DatabaseEntry] = Field(
        default_factory=list, description="Databases to create.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    users: list[User] = Field(
        default_factory=list, description="Users to create, with their grants.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    parameters: list[Parameter] = Field(
        default_factory=list, max_length=64,
        description="Engine parameters, from the engine's settable list (the Catalog's databaseEngines).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    backup: BackupSettings | None = Field(None, description="Continuous WAL archiving and backups into a Bucket.")
    restore: RestoreSpec | None = Field(
        None, description="Start from a backup or a point in time of another Database. Cannot be changed.",
        json_schema_extra={"x-kubernetes-validations": _RESTORE_RULES})


class Window(BaseModel):
    earliest: str = Field("", description="The earliest time a restore can target (RFC 3339).")
    latest: str = Field("", description="The latest time a restore can target (RFC 3339).")


class InstanceStatus(BaseModel):
    name: str = Field(..., description="The instance's Pod.")
    role: str = Field("", description="primary or replica.")
    ready: bool = Field(False, description="The engine accepts connections.")
    lag_bytes: int | None = Field(None, description="Replication lag behind the primary in bytes (replicas).")


class DatabaseStatus(StatusBase):
    """See the module docstring for phases. Conditions: Ready, ReplicationHealthy."""

    engine_version: str = Field("", description="The engine version running (as the engine reports it).")
    primary: str = Field("", description="The current primary's Pod.")
    instances: list[InstanceStatus] = Field(default_factory=list, description="Each instance.")
    secret_name: str = Field("", description="The connection Secret (host, port, user, password, uri).")
    service_name: str = Field("", description="The Service that reaches the primary.")
    last_backup: str = Field("", description="The last successful DatabaseBackup.")
    last_backup_time: str = Field("", description="When it ended.")
    recoverable_window: Window | None = Field(None, description="The times a restore can target.")
    server_name: str = Field("", description="The name backups and WAL carry in the Bucket.")
    restored_from: str = Field("", description="What this Database was restored from.")


class Database(
    CustomResource,
    version=VERSION,
    short_names=["db"],
    subresources={"status": {}},
    printer_columns=[
        printer("Engine", ".spec.engine"),
        printer("Version", ".status.engineVersion"),
        printer("Instances", ".spec.instances", "integer"),
        printer("Primary", ".status.primary"),
        PHASE_COLUMN,
        READY_COLUMN,
    ],
):
    """A managed database (PostgreSQL or MariaDB)."""

    spec: DatabaseSpec
    status: DatabaseStatus = Field(default_factory=DatabaseStatus)


def sample(name: str = "orders", engine: str = "postgresql", **spec) -> dict:
    """A Database manifest for tests and docs."""
    from .registry import API_VERSION

    body = {"engine": engine, "storage": {"size": "1Gi"}, "databases": [{"name": "app"}],
            "users": [{"name": "app", "grants": [{"database": "app"}]}]}
    body.update(spec)
    return {"apiVersion": API_VERSION, "kind": "Database", "metadata": {"name": name}, "spec": body}
