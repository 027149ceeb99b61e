"""kopf handlers, one module per kind. Thin: parse the body into the model, call core/ and drivers/."""

import importlib

#: Every module with handlers; `stratus operator` imports them all.
MODULES = ("settings", "flavor", "keypair", "project", "server", "servergroup", "volumetype", "volume", "blocksnapshot", "bucket", "image", "policyrule", "accesstoken", "catalog", "metering", "baremetal", "consolidation", "datacluster", "datajob", "datajobschedule", "stack", "database", "databasebackup")


def load() -> None:
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
