"""The resource-type registry: Heat types -> Stratus kinds.

Each type has a pure builder (resolved properties -> the Stratus object manifests it
owns), the properties it knows (unknown ones are refused, as Heat refuses them; some are
accepted and ignored, with a warning, where Kubernetes has nothing to honour), its
attributes read from the children's status, and its readiness.

Kinds of type:
    object   owns one or more Stratus objects (Server, Volume, KeyPair, ...)
    attach   sets another object's field (VolumeAttachment -> Volume.spec.attachTo)
    virtual  computed in the engine (Value, None, the software configs)
Types that map onto nothing (Neutron, WaitCondition, AutoScalingGroup, ...) are refused
at validation with a message naming the resource and the type.
"""

from __future__ import annotations

import dataclasses
import email.mime.multipart
import email.mime.text
import hashlib
import json
import re
import typing as t

import yaml

from .errors import HeatError, join
from .functions import Placeholder, has_placeholder

API_VERSION = "stratus.dev/v1alpha1"
PLURALS = {"Server": "servers", "Volume": "volumes", "KeyPair": "keypairs", "ServerGroup": "servergroups",
           "Flavor": "flavors", "VolumeType": "volumetypes", "Bucket": "buckets", "Secret": "secrets"}
CLUSTER_KINDS = {"Flavor", "VolumeType"}
DNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
#: Network names that mean the pod network (no Multus attachment).
POD_NETWORKS = {"pod", "default", "private", "auto"}

# Types refused with a reason a user can act on.
REFUSED = {
    "OS::Neutron::": "Neutron networking is not offered by Stratus: servers join the pod network, or a Multus "
                     "network named in the server's networks property",
    "OS::Heat::WaitCondition": "wait conditions are not supported yet",
    "OS::Heat::AutoScalingGroup": "autoscaling groups are not supported yet; use OS::Heat::ResourceGroup",
    "OS::Heat::ScalingPolicy": "scaling policies are not supported yet",
    "OS::Heat::SoftwareDeployment": "software deployments need an in-guest agent Stratus does not run; "
                                    "pass the config as the server's user_data instead",
    "OS::Glance::WebImage": "Images are imported with a sha256 to check; create the Image first and pass its name",
    "OS::Glance::Image": "Images are imported with a sha256 to check; create the Image first and pass its name",
    "OS::Trove::": "the Database kind does not exist yet",
    "OS::Sahara::": "the DataCluster kind does not exist yet",
    "OS::Keystone::": "Keystone types are not supported yet",
}


@dataclasses.dataclass
class Ctx:
    """What a builder knows besides the properties."""
    name: str                       # the object name of this resource
    stack: str
    namespace: str
    resource: str = ""              # the resource path in the stack
    secret: dict = dataclasses.field(default_factory=dict)   # generated material (RandomString, KeyPair)
    configs: dict = dataclasses.field(default_factory=dict)  # software config id -> content
    bucket_class: str = "default"
    dry_run: bool = False           # validation and preview: nothing is being created


@dataclasses.dataclass
class Build:
    objects: list[dict] = dataclasses.field(default_factory=list)
    attach: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (volume, server)
    warnings: list[str] = dataclasses.field(default_factory=list)
    config: str | None = None       # a software config's content


@dataclasses.dataclass
class Observed:
    """A created resource as it is: its objects (by kind), properties and secrets."""
    name: str
    props: dict
    objects: dict = dataclasses.field(default_factory=dict)
    secret: dict = dataclasses.field(default_factory=dict)
    config: str | None = None

    def main(self, kind: str) -> dict:
        return self.objects.get(kind) or {}


@dataclasses.dataclass
class ResourceType:
    name: str
    kind: str                                   # object | attach | virtual
    properties: frozenset[str]
    required: frozenset[str] = frozenset()
    ignored: frozenset[str] = frozenset()       # accepted, with a warning
    attributes: frozenset[str] = frozenset()
    build: t.Callable[[Ctx, dict], Build] | None = None
    main_kind: str = ""
    admin: bool = False
    secret: str = ""                            # "" | random | keypair
    replace_on: tuple[str, ...] = ()            # spec fields of main_kind whose change means replacement
    any_attribute: bool = False

    def attribute(self, obs: Observed, attr: str):
        fn = ATTRIBUTES.get(self.name)
        if attr == "show":
            return _show(obs)
        return fn(obs, attr) if fn else None

    def reference(self, obs: Observed):
        fn = REFERENCES.get(self.name)
        return fn(obs) if fn else obs.name


def manifest(kind: str, name: str, spec: dict, annotations: dict | None = None) -> dict:
    api = "v1" if kind == "Secret" else API_VERSION
    body = {"apiVersion": api, "kind": kind, "metadata": {"name": name}}
    if annotations:
        body["metadata"]["annotations"] = annotations
    if kind == "Secret":
        body.update(spec)
    else:
        body["spec"] = spec
    return body


def _name(value, path: str, what: str) -> str:
    if isinstance(value, Placeholder):
        return value  # known at creation
    if not isinstance(value, str) or not DNS.match(value) or len(value) > 253:
        raise HeatError(path, f"{what} {value!r} is not a Kubernetes object name (lower-case letters, digits, '-' and '.')")
    return value


def _gi(value, path: str) -> str:
    if isinstance(value, Placeholder):
        return value
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise HeatError(path, f"expected a whole number of GiB, got {value!r}") from None
    if size < 1:
        raise HeatError(path, "must be at least 1 (GiB)")
    return f"{size}Gi"


def _display(props: dict) -> dict:
    return {"stratus.dev/display-name": str(props["name"])} if props.get("name") and not has_placeholder(props.get("name")) else {}


# -- Nova ---------------------------------------------------------------------------------

BOOT_DEVICES = {"vda", "sda", "xvda", "hda"}


def build_server(ctx: Ctx, p: dict) -> Build:
    out = Build()
    path = "properties"
    spec: dict = {"flavor": _name(p.get("flavor"), join(path, "flavor"), "flavor")}
    boot = None
    for i, m in enumerate(p.get("block_device_mapping") or []):
        where = join(path, "block_device_mapping", i)
        if not isinstance(m, dict) or not m.get("volume_id"):
            raise HeatError(where, "needs volume_id (snapshots are not supported here)")
        vol = _name(m["volume_id"], join(where, "volume_id"), "volume")
        if m.get("device_name") in BOOT_DEVICES and boot is None:
            boot = vol
        else:
            out.attach.append((vol, ctx.name))
    for i, m in enumerate(p.get("block_device_mapping_v2") or []):
        where = join(path, "block_device_mapping_v2", i)
        if not isinstance(m, dict):
            raise HeatError(where, "must be a map")
        is_boot = str(m.get("boot_index", "")) == "0" or (boot is None and not p.get("image") and i == 0 and m.get("boot_index") in (None, ""))
        image = m.get("image") or m.get("image_id")
        if m.get("volume_id"):
            vol = _name(m["volume_id"], join(where, "volume_id"), "volume")
        elif image:
            if not m.get("volume_size"):
                raise HeatError(join(where, "volume_size"), "is required to create a volume from an image")
            vol = f"{ctx.name}-bdm-{i}"
            spec_v = {"size": _gi(m["volume_size"], join(where, "volume_size")),
                      "source": {"image": _name(image, join(where, "image"), "image")}}
            out.objects.append(manifest("Volume", vol, spec_v))
        elif m.get("snapshot_id"):
            vol = f"{ctx.name}-bdm-{i}"
            if not m.get("volume_size"):
                raise HeatError(join(where, "volume_size"), "is required to create a volume from a snapshot")
            out.objects.append(manifest("Volume", vol, {"size": _gi(m["volume_size"], join(where, "volume_size")),
                                                        "source": {"snapshot": _name(m["snapshot_id"], join(where, "snapshot_id"), "snapshot")}}))
        else:
            raise HeatError(where, "needs volume_id, image or snapshot_id (swap and ephemeral disks are not supported)")
        if is_boot and boot is None:
            boot = vol
        else:
            out.attach.append((vol, ctx.name))
    if boot is not None:
        spec["bootVolume"] = boot
        if p.get("image"):
            out.warnings.append("image is ignored: the server boots from a volume")
    elif p.get("image"):
        spec["image"] = _name(p["image"], join(path, "image"), "image")
    else:
        raise HeatError(path, "needs image, or a block_device_mapping(_v2) entry to boot from")
    if p.get("key_name"):
        spec["keyPair"] = _name(p["key_name"], join(path, "key_name"), "key pair")
    user_data = p.get("user_data")
    if user_data not in (None, ""):
        fmt = p.get("user_data_format") or "HEAT_CFNTOOLS"
        if fmt not in ("HEAT_CFNTOOLS", "RAW", "SOFTWARE_CONFIG"):
            raise HeatError(join(path, "user_data_format"), "must be HEAT_CFNTOOLS, RAW or SOFTWARE_CONFIG")
        if isinstance(user_data, str) and user_data in ctx.configs:
            user_data = ctx.configs[user_data]
        elif fmt == "SOFTWARE_CONFIG" and not isinstance(user_data, Placeholder):
            raise HeatError(join(path, "user_data"), "with SOFTWARE_CONFIG must be a software config of this stack")
        spec["userData"] = user_data if isinstance(user_data, (str, Placeholder)) else json.dumps(user_data)
    networks = []
    for i, n in enumerate(p.get("networks") or []):
        where = join(path, "networks", i)
        if not isinstance(n, dict):
            raise HeatError(where, "must be a map")
        for key in ("port", "fixed_ip", "subnet", "floating_ip", "port_extra_properties"):
            if n.get(key):
                raise HeatError(join(where, key), "needs Neutron, which Stratus does not offer; name a network only")
        net = n.get("network") or n.get("uuid")
        if n.get("allocate_network") in ("auto", "none") and not net:
            continue
        if not net:
            raise HeatError(where, "needs network")
        if isinstance(net, str) and net in POD_NETWORKS:
            continue
        networks.append({"name": _name(net, join(where, "network"), "network")})
    if networks:
        spec["networks"] = networks
    hints = p.get("scheduler_hints") or {}
    if isinstance(hints, dict) and hints.get("group"):
        spec["serverGroup"] = _name(hints["group"], join(path, "scheduler_hints", "group"), "server group")
    for other in sorted(set(hints) - {"group"}) if isinstance(hints, dict) else []:
        out.warnings.append(f"scheduler hint {other} is ignored")
    annotations = _display(p)
    if p.get("metadata"):
        annotations["stratus.dev/heat-metadata"] = json.dumps(p["metadata"], sort_keys=True, default=repr)
    out.objects.insert(0, manifest("Server", ctx.name, spec, annotations))
    return out


def _server_attr(obs: Observed, attr: str):
    body = obs.main("Server")
    st = body.get("status") or {}
    addrs = st.get("addresses") or []
    if attr == "first_address":
        return addrs[0]["address"] if addrs else ""
    if attr in ("accessIPv4", "accessIPv6"):
        want = ":" if attr.endswith("6") else "."
        return next((a["address"] for a in addrs if want in a["address"]), "")
    if attr == "addresses":
        out: dict = {}
        for a in addrs:
            out.setdefault(a["network"], []).append({"addr": a["address"], "version": 6 if ":" in a["address"] else 4,
                                                     "OS-EXT-IPS:type": "fixed"})
        return out
    if attr == "networks":
        out = {}
        for a in addrs:
            out.setdefault(a["network"], []).append(a["address"])
        return out
    if attr == "name":
        return obs.props.get("name") or obs.name
    if attr == "instance_name":
        return st.get("virtualMachine") or obs.name
    if attr == "console_urls":
        return {}
    if attr == "os_collect_config":
        return {}
    return None


def build_keypair(ctx: Ctx, p: dict) -> Build:
    public = p.get("public_key") or ctx.secret.get("public_key")
    if not public:
        public = Placeholder("a generated public key")
    if p.get("type") == "x509":
        raise HeatError("properties.type", "x509 keys are not supported; use ssh")
    return Build(objects=[manifest("KeyPair", ctx.name, {"publicKey": public}, _display(p))])


def _keypair_attr(obs: Observed, attr: str):
    if attr == "public_key":
        return obs.props.get("public_key") or obs.secret.get("public_key", "")
    if attr == "private_key":  # as in Heat: only a generated key that save_private_key keeps
        return obs.secret.get("private_key", "") if obs.props.get("save_private_key") else ""
    return None


POLICIES = {"affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"}


def build_servergroup(ctx: Ctx, p: dict) -> Build:
    policies = p.get("policies") or ([p["policy"]] if p.get("policy") else ["anti-affinity"])
    if not isinstance(policies, list) or len(policies) != 1 or (policies[0] not in POLICIES and not isinstance(policies[0], Placeholder)):
        raise HeatError("properties.policies", "takes exactly one of " + ", ".join(sorted(POLICIES)))
    return Build(objects=[manifest("ServerGroup", ctx.name, {"policy": policies[0]}, _display(p))])


def build_flavor(ctx: Ctx, p: dict) -> Build:
    spec: dict = {"vcpus": p.get("vcpus", 1), "ram": f"{int(p['ram'])}Mi" if not has_placeholder(p.get("ram")) else p.get("ram")}
    if p.get("disk"):
        spec["disk"] = _gi(p["disk"], "properties.disk")
    if p.get("ephemeral"):
        spec["ephemeral"] = _gi(p["ephemeral"], "properties.ephemeral")
    if p.get("extra_specs"):
        spec["extraSpecs"] = {k: str(v) for k, v in p["extra_specs"].items()}
    if p.get("is_public") is False:
        spec["isPublic"] = False
        spec["projects"] = list(p.get("tenants") or [ctx.namespace])
    out = Build(objects=[manifest("Flavor", ctx.name, spec, _display(p))])
    if p.get("swap"):
        out.warnings.append("swap is ignored")
    return out


def _flavor_name(p: dict, default: str) -> str:
    return p["name"] if isinstance(p.get("name"), str) and DNS.match(p["name"]) else default


# -- Cinder ---------------------------------------------------------------------------------

def build_volume(ctx: Ctx, p: dict) -> Build:
    if p.get("size") in (None, ""):
        raise HeatError("properties.size", "is required (Stratus volumes are sized when created)")
    spec: dict = {"size": _gi(p["size"], "properties.size")}
    image = p.get("image") or p.get("imageRef")
    sources = [("image", image, "image"), ("volume", p.get("source_volid"), "source_volid"),
               ("snapshot", p.get("snapshot_id"), "snapshot_id")]
    given = [(k, v, prop) for k, v, prop in sources if v]
    if len(given) > 1:
        raise HeatError("properties", "takes at most one of image, source_volid and snapshot_id")
    if given:
        k, v, prop = given[0]
        spec["source"] = {k: _name(v, f"properties.{prop}", prop)}
    if p.get("backup_id"):
        raise HeatError("properties.backup_id", "volume backups are not supported")
    if p.get("volume_type"):
        spec["volumeType"] = _name(p["volume_type"], "properties.volume_type", "volume type")
    if p.get("description"):
        spec["description"] = str(p["description"])[:1024]
    if p.get("read_only"):
        spec["readOnly"] = True
    annotations = _display(p)
    if p.get("metadata"):
        annotations["stratus.dev/heat-metadata"] = json.dumps(p["metadata"], sort_keys=True, default=repr)
    return Build(objects=[manifest("Volume", ctx.name, spec, annotations)])


def _volume_attr(obs: Observed, attr: str):
    body = obs.main("Volume")
    st, spec = body.get("status") or {}, body.get("spec") or {}
    att = st.get("attachment")
    values = {
        "size": int(str(spec.get("size", "0")).rstrip("Gi") or 0) if str(spec.get("size", "")).endswith("Gi") else spec.get("size"),
        "status": st.get("phase", ""), "display_name": obs.props.get("name") or obs.name,
        "display_description": obs.props.get("description", ""), "volume_type": st.get("volumeType", ""),
        "metadata": json.dumps(obs.props.get("metadata") or {}), "metadata_values": obs.props.get("metadata") or {},
        "source_volid": (spec.get("source") or {}).get("volume"), "snapshot_id": (spec.get("source") or {}).get("snapshot"),
        "bootable": bool((spec.get("source") or {}).get("image")), "availability_zone": "nova",
        "attachments": json.dumps([{"server_id": att["server"]}] if att else []),
        "attachments_list": [{"server_id": att["server"]}] if att else [],
        "created_at": body.get("metadata", {}).get("creationTimestamp", ""), "encrypted": False, "multiattach": False,
    }
    return values.get(attr)


def build_attachment(ctx: Ctx, p: dict) -> Build:
    server = _name(p.get("instance_uuid"), "properties.instance_uuid", "server")
    volume = _name(p.get("volume_id"), "properties.volume_id", "volume")
    return Build(attach=[(volume, server)])


def build_volumetype(ctx: Ctx, p: dict) -> Build:
    meta = p.get("metadata") or {}
    backend = meta.get("volume_backend_name") if isinstance(meta, dict) else None
    if not backend:
        raise HeatError("properties.metadata.volume_backend_name", "must name the StorageClass behind the type")
    spec = {"storageClassName": _name(backend, "properties.metadata.volume_backend_name", "storage class")}
    if p.get("description"):
        spec["description"] = str(p["description"])[:1024]
    return Build(objects=[manifest("VolumeType", ctx.name, spec, _display(p))])


# -- Swift ---------------------------------------------------------------------------------

def build_container(ctx: Ctx, p: dict) -> Build:
    spec: dict = {"bucketClassName": ctx.bucket_class}
    if p.get("name"):
        spec["bucketName"] = p["name"]
    if ".r:*" in str(p.get("X-Container-Read") or ""):
        spec["access"] = "PublicRead"
    if p.get("PurgeOnDelete"):
        spec["forceDelete"] = True
    return Build(objects=[manifest("Bucket", ctx.name, spec)])


def _container_attr(obs: Observed, attr: str):
    st = obs.main("Bucket").get("status") or {}
    endpoint, bucket = st.get("endpoint", ""), st.get("bucketName", "")
    usage = st.get("usage") or {}
    host = re.sub(r"^https?://", "", endpoint).split("/")[0]
    values = {"DomainName": host, "WebsiteURL": f"{endpoint.rstrip('/')}/{bucket}", "RootURL": f"{endpoint.rstrip('/')}/",
              "ObjectCount": usage.get("objects", 0), "BytesUsed": usage.get("bytes", 0),
              "HeadContainer": {"x-container-object-count": usage.get("objects", 0), "x-container-bytes-used": usage.get("bytes", 0)}}
    return values.get(attr)


# -- Heat ---------------------------------------------------------------------------------

def build_random(ctx: Ctx, p: dict) -> Build:
    length = _int(p.get("length", 32), "properties.length")
    from .secrets import min_length
    if not isinstance(length, Placeholder) and (not isinstance(length, int) or length < 1 or length > 512):
        raise HeatError("properties.length", "must be a whole number from 1 to 512")
    if isinstance(length, int) and min_length(p) > length:
        raise HeatError("properties.length", f"is shorter than the minimums of character_classes/sequences ({min_length(p)})")
    # The value itself is generated by the controller and kept in a Secret (see secrets.py).
    return Build()


def _int(value, path: str):
    """Integer properties, as Heat coerces them ("4" from a comma_delimited_list is 4)."""
    if isinstance(value, Placeholder) or isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise HeatError(path, f"expected a whole number, got {value!r}") from None


def build_test_resource(ctx: Ctx, p: dict) -> Build:
    """OS::Heat::TestResource (Heat's own test type): `output` is `value`; fail fails it."""
    out = Build()
    if not ctx.dry_run and (p.get("fail") is True or str(p.get("fail")).lower() == "true"):
        raise HeatError("properties.fail", "the test resource was told to fail")
    if p.get("wait_secs") or p.get("action_wait_secs"):
        out.warnings.append("wait_secs is ignored")
    return out


def _test_attr(obs: Observed, attr: str):
    return obs.props.get("value") if attr == "output" else None


def build_value(ctx: Ctx, p: dict) -> Build:
    return Build()


def build_none(ctx: Ctx, p: dict) -> Build:
    return Build()


def build_cloudconfig(ctx: Ctx, p: dict) -> Build:
    cfg = p.get("cloud_config") or {}
    if has_placeholder(cfg):
        return Build(config=Placeholder("cloud-config"))
    return Build(config="#cloud-config\n" + yaml.safe_dump(cfg, default_flow_style=False, sort_keys=False))


def build_softwareconfig(ctx: Ctx, p: dict) -> Build:
    return Build(config=p.get("config") or "")


def build_multipart(ctx: Ctx, p: dict) -> Build:
    parts = p.get("parts") or []
    if has_placeholder(parts):
        return Build(config=Placeholder("multipart user data"))
    subtype = p.get("group", "mixed") if p.get("group") in ("mixed", "alternative") else "mixed"
    msg = email.mime.multipart.MIMEMultipart(_subtype=subtype)
    for i, part in enumerate(parts):
        config = part.get("config", "")
        content = ctx.configs.get(config, config) if isinstance(config, str) else json.dumps(config)
        if part.get("type") == "multipart":
            sub = email.message_from_string(content)
            for piece in sub.walk():
                if not piece.is_multipart():
                    msg.attach(piece)
            continue
        kind = part.get("subtype") or ("cloud-config" if content.startswith("#cloud-config") else
                                       "x-shellscript" if content.startswith("#!") else "plain")
        item = email.mime.text.MIMEText(content, kind, "us-ascii" if content.isascii() else "utf-8")
        item.add_header("Content-Disposition", "attachment", filename=part.get("filename") or f"part-{i:03d}")
        msg.attach(item)
    # A boundary made from the content keeps the user data stable across reconciles.
    msg.set_boundary("===============" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20] + "==")
    return Build(config=msg.as_string())


def _config_attr(obs: Observed, attr: str):
    return obs.config if attr == "config" else None


def _value_attr(obs: Observed, attr: str):
    return obs.props.get("value") if attr == "value" else None


def _random_attr(obs: Observed, attr: str):
    return obs.secret.get("value", "") if attr == "value" else None


def _show(obs: Observed):
    body = next(iter(obs.objects.values()), None)
    if body is None or body.get("kind") == "Secret":
        return {"name": obs.name}
    return {"name": obs.name, "spec": body.get("spec"), "status": body.get("status")}


SERVER_PROPS = {"name", "flavor", "image", "key_name", "networks", "block_device_mapping", "block_device_mapping_v2",
                "user_data", "user_data_format", "metadata", "scheduler_hints"}
SERVER_IGNORED = {"availability_zone", "config_drive", "diskConfig", "security_groups", "software_config_transport",
                  "personality", "reservation_id", "admin_pass", "admin_user", "flavor_update_policy",
                  "image_update_policy", "user_data_update_policy", "deployment_swift_data", "tags", "user_data_format"}

TYPES: dict[str, ResourceType] = {rt.name: rt for rt in (
    ResourceType("OS::Nova::Server", "object", frozenset(SERVER_PROPS | SERVER_IGNORED), frozenset({"flavor"}),
                 frozenset(SERVER_IGNORED - {"user_data_format"}),
                 frozenset({"first_address", "addresses", "networks", "name", "show", "instance_name", "accessIPv4",
                            "accessIPv6", "console_urls", "os_collect_config"}),
                 build_server, "Server", replace_on=("bootVolume", "serverGroup")),
    ResourceType("OS::Nova::KeyPair", "object", frozenset({"name", "public_key", "save_private_key", "type", "user"}),
                 frozenset({"name"}), frozenset({"user"}), frozenset({"public_key", "private_key", "show"}),
                 build_keypair, "KeyPair", secret="keypair", replace_on=("publicKey",)),
    ResourceType("OS::Nova::ServerGroup", "object", frozenset({"name", "policies", "policy", "rules"}), frozenset(),
                 frozenset({"rules"}), frozenset({"show"}), build_servergroup, "ServerGroup", replace_on=("policy",)),
    ResourceType("OS::Nova::Flavor", "object", frozenset({"name", "flavorid", "ram", "vcpus", "disk", "swap", "ephemeral",
                                                           "rxtx_factor", "extra_specs", "is_public", "tenants"}),
                 frozenset({"ram", "vcpus"}), frozenset({"flavorid", "rxtx_factor"}), frozenset({"is_public", "show"}),
                 build_flavor, "Flavor", admin=True),
    ResourceType("OS::Cinder::Volume", "object", frozenset({"name", "description", "size", "image", "imageRef",
                                                            "volume_type", "source_volid", "snapshot_id", "backup_id",
                                                            "metadata", "availability_zone", "read_only", "multiattach",
                                                            "scheduler_hints"}),
                 frozenset(), frozenset({"availability_zone", "multiattach", "scheduler_hints"}),
                 frozenset({"availability_zone", "size", "snapshot_id", "display_name", "display_description",
                            "volume_type", "metadata", "metadata_values", "source_volid", "status", "created_at",
                            "bootable", "encrypted", "attachments", "attachments_list", "multiattach", "show"}),
                 build_volume, "Volume", replace_on=("source", "volumeType")),
    ResourceType("OS::Cinder::VolumeAttachment", "attach", frozenset({"instance_uuid", "volume_id", "mountpoint"}),
                 frozenset({"instance_uuid", "volume_id"}), frozenset({"mountpoint"}), frozenset({"show"}),
                 build_attachment),
    ResourceType("OS::Cinder::VolumeType", "object", frozenset({"name", "metadata", "is_public", "description", "projects"}),
                 frozenset({"name"}), frozenset({"is_public", "projects"}), frozenset({"show"}), build_volumetype,
                 "VolumeType", admin=True, replace_on=("storageClassName",)),
    ResourceType("OS::Swift::Container", "object", frozenset({"name", "X-Container-Read", "X-Container-Write",
                                                              "X-Container-Meta", "X-Account-Meta", "PurgeOnDelete"}),
                 frozenset(), frozenset({"X-Container-Write", "X-Container-Meta", "X-Account-Meta"}),
                 frozenset({"DomainName", "WebsiteURL", "RootURL", "ObjectCount", "BytesUsed", "HeadContainer", "show"}),
                 build_container, "Bucket", replace_on=("bucketName",)),
    ResourceType("OS::Heat::RandomString", "virtual", frozenset({"length", "sequence", "character_classes",
                                                                "character_sequences", "salt"}),
                 attributes=frozenset({"value"}), build=build_random, secret="random"),
    ResourceType("OS::Heat::Value", "virtual", frozenset({"value", "type"}), frozenset({"value"}),
                 attributes=frozenset({"value"}), build=build_value),
    ResourceType("OS::Heat::None", "virtual", frozenset(), build=build_none, any_attribute=True),
    ResourceType("OS::Heat::TestResource", "virtual",
                 frozenset({"value", "update_replace", "fail", "client_name", "entity_name", "wait_secs",
                            "action_wait_secs", "attr_wait_secs", "constraint_prop_secs", "update_replace_value"}),
                 ignored=frozenset({"update_replace", "client_name", "entity_name", "wait_secs", "action_wait_secs",
                                    "attr_wait_secs", "constraint_prop_secs", "update_replace_value"}),
                 attributes=frozenset({"output"}), build=build_test_resource),
    ResourceType("OS::Heat::CloudConfig", "virtual", frozenset({"cloud_config"}), attributes=frozenset({"config"}),
                 build=build_cloudconfig),
    ResourceType("OS::Heat::SoftwareConfig", "virtual", frozenset({"config", "group", "inputs", "outputs", "options"}),
                 ignored=frozenset({"group", "inputs", "outputs", "options"}), attributes=frozenset({"config"}),
                 build=build_softwareconfig),
    ResourceType("OS::Heat::MultipartMime", "virtual", frozenset({"parts", "group"}), attributes=frozenset({"config"}),
                 build=build_multipart),
)}

ATTRIBUTES = {"OS::Nova::Server": _server_attr, "OS::Nova::KeyPair": _keypair_attr, "OS::Cinder::Volume": _volume_attr,
              "OS::Swift::Container": _container_attr, "OS::Heat::RandomString": _random_attr,
              "OS::Heat::Value": _value_attr, "OS::Heat::TestResource": _test_attr, "OS::Heat::CloudConfig": _config_attr,
              "OS::Heat::SoftwareConfig": _config_attr, "OS::Heat::MultipartMime": _config_attr,
              "OS::Nova::Flavor": lambda obs, attr: obs.props.get("is_public", True) if attr == "is_public" else None}
REFERENCES = {"OS::Heat::RandomString": lambda obs: obs.secret.get("value", ""),
              "OS::Swift::Container": lambda obs: (obs.main("Bucket").get("status") or {}).get("bucketName") or obs.name}

#: Failure phases of the Stratus kinds (anything else that is not Ready is in progress).
FAILED_PHASES = {"Server": {"ERROR"}, "Volume": {"error"}, "KeyPair": {"Invalid"}, "Flavor": {"Invalid"},
                 "Bucket": {"Error"}, "VolumeType": {"Invalid"}, "ServerGroup": set()}


def object_state(body: dict | None) -> tuple[str, str]:
    """(COMPLETE | IN_PROGRESS | FAILED, message) of one child object."""
    if body is None:
        return "IN_PROGRESS", "not created yet"
    if body.get("kind") == "Secret":
        return "COMPLETE", ""
    st = body.get("status") or {}
    ready = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
    gen = body.get("metadata", {}).get("generation", 0)
    if st.get("observedGeneration", 0) < gen:
        return "IN_PROGRESS", "waiting for the operator to observe the change"
    if st.get("phase") in FAILED_PHASES.get(body.get("kind"), set()):
        return "FAILED", f"{body['kind']} {body['metadata']['name']} is {st.get('phase')}: {(ready or {}).get('message', '')}"
    if ready and ready.get("status") == "True":
        return "COMPLETE", ""
    return "IN_PROGRESS", f"{body['kind']} {body['metadata']['name']} is {st.get('phase') or 'pending'}" + \
        (f": {ready.get('message')}" if ready and ready.get("message") else "")


def refused(type_name: str) -> str | None:
    """Why a type is refused, or None when it is known."""
    if type_name in TYPES:
        return None
    for prefix, why in REFUSED.items():
        if type_name.startswith(prefix):
            return why
    return "not a resource type Stratus supports (supported: " + ", ".join(sorted(TYPES)) + \
        ", OS::Heat::ResourceGroup and nested templates)"
