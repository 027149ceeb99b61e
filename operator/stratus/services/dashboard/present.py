"""What the pages show, computed from API objects, and what the forms send (no I/O).

Rows and bars are plain dicts the templates render; form builders turn a submitted form
into the object the API server receives, checking what the schema says first (the API
server's answer stays authoritative) and mapping the API server's field errors back to
the form's fields.
"""

from __future__ import annotations

import re
import typing as t

from ...core.identity import QUOTA_RESOURCES, quota_resource
from ...core.quantity import parse_bytes, parse_millicpu

GROUP, VERSION = "stratus.dev", "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SIZE_RE = re.compile(r"^[1-9][0-9]*(Ki|Mi|Gi|Ti|Pi)?$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

QUOTA_LABELS = {
    "servers": "Servers", "vcpus": "vCPUs", "memory": "RAM", "volumes": "Volumes", "volumeGigabytes": "Volume storage",
    "snapshots": "Snapshots", "images": "Images", "buckets": "Buckets", "databases": "Databases",
    "dataClusters": "Data clusters", "stacks": "Stacks",
}


def condition(obj: dict, type_: str = "Ready") -> dict:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return {}


def _amount(resource: str, value: str) -> int:
    """A quota quantity as an integer in its natural unit (count, millicores, bytes)."""
    if resource.startswith("count/"):
        return int(value)
    if resource.endswith(".cpu") or resource == "cpu":
        return parse_millicpu(value)
    return parse_bytes(value)


def _human(resource: str, value: str) -> str:
    if resource.endswith(".cpu"):
        m = parse_millicpu(value)
        return str(m // 1000) if m % 1000 == 0 else f"{m / 1000:g}"
    if resource.startswith("count/"):
        return str(value)
    n = parse_bytes(value)
    for suffix, unit in (("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20)):
        if n >= unit:
            return f"{n / unit:.3g} {suffix}B"
    return f"{n} B"


def quota_bars(resource_quota: dict | None) -> list[dict]:
    """One bar per limit of the project's ResourceQuota, in the order of spec.quota."""
    status = (resource_quota or {}).get("status") or {}
    hard, used = status.get("hard") or {}, status.get("used") or {}
    bars = []
    for name in QUOTA_RESOURCES:
        resource = quota_resource(name)
        if not resource or resource not in hard:
            continue
        limit_s, used_s = str(hard[resource]), str(used.get(resource, "0"))
        try:
            limit, use = _amount(resource, limit_s), _amount(resource, used_s)
        except ValueError:
            continue
        percent = 100 if limit == 0 and use > 0 else (0 if limit == 0 else min(100, round(100 * use / limit)))
        bars.append({
            "name": name, "label": QUOTA_LABELS.get(name, name), "resource": resource,
            "used": _human(resource, used_s), "limit": _human(resource, limit_s), "percent": percent,
            "level": "full" if percent >= 100 else ("high" if percent >= 80 else "ok"),
        })
    return bars


def recent_events(events: list[dict], limit: int = 15) -> list[dict]:
    def when(e: dict) -> str:
        return e.get("lastTimestamp") or e.get("eventTime") or (e.get("metadata") or {}).get("creationTimestamp") or ""

    rows = []
    for e in sorted(events, key=when, reverse=True)[:limit]:
        obj = e.get("involvedObject") or {}
        rows.append({"when": when(e)[:19].replace("T", " "), "type": e.get("type", ""), "reason": e.get("reason", ""),
                     "object": f"{obj.get('kind', '')}/{obj.get('name', '')}", "message": e.get("message", "")})
    return rows


def server_row(server: dict) -> dict:
    meta, spec, status = server.get("metadata") or {}, server.get("spec") or {}, server.get("status") or {}
    ready = condition(server)
    phase = status.get("phase") or "BUILD"
    if meta.get("deletionTimestamp"):
        phase = "DELETING"
    return {
        "name": meta.get("name", ""), "phase": phase, "flavor": status.get("flavor") or spec.get("flavor", ""),
        "node": status.get("node", ""), "power": spec.get("powerState", "Running"),
        "addresses": ", ".join(a.get("address", "") for a in status.get("addresses") or []),
        "source": f"image {spec['image']}" if spec.get("image") else (
            f"volume {spec['bootVolume']}" if spec.get("bootVolume") else spec.get("containerDisk") or ""),
        "message": ready.get("message", "") if ready.get("status") != "True" else "",
        "deleting": bool(meta.get("deletionTimestamp")),
    }


def volume_row(volume: dict) -> dict:
    meta, spec, status = volume.get("metadata") or {}, volume.get("spec") or {}, volume.get("status") or {}
    ready = condition(volume)
    attachment = status.get("attachment") or {}
    return {
        "name": meta.get("name", ""), "phase": status.get("phase", "") or "Creating", "size": spec.get("size", ""),
        "actual": status.get("size", ""), "type": status.get("volumeType") or spec.get("volumeType") or "",
        "attached": attachment.get("server", ""), "attach_to": spec.get("attachTo") or "",
        "boot": bool(attachment.get("boot")),
        "message": ready.get("message", "") if ready.get("status") != "True" else "",
    }


def image_row(image: dict) -> dict:
    meta, spec, status = image.get("metadata") or {}, image.get("spec") or {}, image.get("status") or {}
    ready = condition(image)
    progress = status.get("progress") or {}
    source = spec.get("source") or {}
    if source.get("http"):
        origin = source["http"].get("url", "")
    elif source.get("registry"):
        origin = source["registry"].get("url", "")
    elif source.get("volume"):
        origin = "volume " + source["volume"].get("name", "")
    else:
        origin = "upload" if "upload" in source else ""
    phase = status.get("phase") or "queued"
    percent = progress.get("percent")
    if phase == "active":
        percent = 100
    return {
        "name": meta.get("name", ""), "phase": phase, "format": status.get("detectedFormat") or spec.get("diskFormat", ""),
        "size": status.get("size"), "percent": percent, "bytes": progress.get("bytes", 0), "origin": origin,
        "visibility": spec.get("visibility", "private"), "protected": bool(spec.get("protected")),
        "message": ready.get("message", "") if ready.get("status") != "True" else "",
    }


def bucket_row(bucket: dict) -> dict:
    meta, spec, status = bucket.get("metadata") or {}, bucket.get("spec") or {}, bucket.get("status") or {}
    usage = status.get("usage") or {}
    ready = condition(bucket)
    return {
        "name": meta.get("name", ""), "phase": status.get("phase", ""), "class": spec.get("bucketClassName", ""),
        "bucket": status.get("bucketName", ""), "endpoint": status.get("endpoint", ""), "region": status.get("region", ""),
        "secret": status.get("secretName", ""), "configmap": status.get("configMapName", ""),
        "objects": usage.get("objects", 0), "bytes": usage.get("bytes", 0), "access": spec.get("access", "Private"),
        "message": ready.get("message", "") if ready.get("status") != "True" else "",
    }


def _not_ready_message(obj: dict) -> str:
    ready = condition(obj)
    return ready.get("message", "") if ready.get("status") != "True" else ""


def database_row(db: dict) -> dict:
    meta, spec, status = db.get("metadata") or {}, db.get("spec") or {}, db.get("status") or {}
    instances = status.get("instances") or []
    window = status.get("recoverableWindow") or {}
    return {
        "name": meta.get("name", ""), "phase": status.get("phase") or "Pending", "engine": spec.get("engine", ""),
        "version": status.get("engineVersion") or spec.get("version") or "",
        "ready": sum(1 for i in instances if i.get("ready")), "instances": spec.get("instances", 1),
        "size": (spec.get("storage") or {}).get("size", ""), "service": status.get("serviceName", ""),
        "secret": status.get("secretName", ""), "primary": status.get("primary", ""),
        "last_backup": status.get("lastBackup", ""), "last_backup_time": status.get("lastBackupTime", ""),
        "window": f"{window['earliest']} – {window['latest']}" if window.get("earliest") else "",
        "message": _not_ready_message(db),
    }


def datacluster_row(cluster: dict) -> dict:
    meta, status = cluster.get("metadata") or {}, cluster.get("status") or {}
    return {
        "name": meta.get("name", ""), "phase": status.get("phase") or "Pending", "workers": status.get("workers", ""),
        "cores": status.get("cores", 0), "master": status.get("masterUrl", ""), "ui": status.get("webUi", ""),
        "message": _not_ready_message(cluster),
    }


def datajob_row(job: dict) -> dict:
    meta, spec, status = job.get("metadata") or {}, job.get("spec") or {}, job.get("status") or {}
    return {
        "name": meta.get("name", ""), "phase": status.get("phase") or "Pending", "cluster": spec.get("clusterName", ""),
        "attempt": status.get("attempt", 0), "application": status.get("applicationId", ""),
        "started": status.get("startTime", ""), "ended": status.get("completionTime", ""),
        "reason": status.get("reason", "") or _not_ready_message(job),
    }


def stack_row(stack: dict) -> dict:
    meta, status = stack.get("metadata") or {}, stack.get("status") or {}
    resources = status.get("resources") or []
    return {
        "name": meta.get("name", ""), "phase": status.get("phase") or "CREATE_PENDING",
        "reason": status.get("stackStatusReason", ""),
        "resources": [{"name": r.get("name", ""), "type": r.get("type", ""), "state": r.get("state", ""),
                       "reason": r.get("reason", "")} for r in resources],
        # Outputs marked secret stay in the outputs Secret; the page says where, never the value.
        "outputs": [{"name": o.get("name", ""), "secret": bool(o.get("secret")),
                     "value": "" if o.get("secret") else (o.get("value") or o.get("error") or "")}
                    for o in status.get("outputs") or []],
        "outputs_secret": status.get("outputsSecret", ""),
        "warnings": status.get("warnings") or [],
    }


ROWS: dict[str, t.Callable[[dict], dict]] = {"servers": server_row, "volumes": volume_row, "images": image_row,
                                             "databases": database_row, "dataclusters": datacluster_row,
                                             "datajobs": datajob_row, "stacks": stack_row}


# --- Paging ---------------------------------------------------------------------------

#: Rows per page of a list: one LIST with ``limit``; the API server's ``continue`` token
#: in the URL reads the next page of the same snapshot.
PAGE_SIZE = 100


def page_params(query: t.Mapping[str, str], size: int = PAGE_SIZE) -> dict[str, str]:
    params = {"limit": str(size)}
    if query.get("continue"):
        params["continue"] = query["continue"]
    return params


def pager(listing: dict, names: list[str], query: t.Mapping[str, str]) -> dict:
    """Where this page sits: the next page's token, whether it is a later page, and the
    names it spans (a live row outside them belongs to another page and is not added)."""
    meta = listing.get("metadata") or {}
    following = meta.get("continue") or ""
    continued = bool(query.get("continue"))
    return {"next": following, "continued": continued, "remaining": meta.get("remainingItemCount"),
            "first": names[0] if continued and names else "", "last": names[-1] if following and names else ""}


# --- Forms ----------------------------------------------------------------------------

class FormErrors(dict):
    """field -> message; "" is for the form as a whole."""


def _name(form: dict, errors: FormErrors, field: str = "name") -> str:
    name = (form.get(field) or "").strip()
    if not name:
        errors[field] = "A name is required."
    elif len(name) > 253 or not NAME_RE.match(name):
        errors[field] = "Lower-case letters, digits, '-' and '.', starting and ending with a letter or digit."
    return name


def server_from_form(form: dict) -> tuple[dict, FormErrors]:
    """The Server to create from the launch form, and what the schema refuses in it."""
    errors = FormErrors()
    name = _name(form, errors)
    spec: dict = {}
    flavor = (form.get("flavor") or "").strip()
    if not flavor:
        errors["flavor"] = "Choose a flavor."
    spec["flavor"] = flavor
    source = form.get("source") or "image"
    if source == "image":
        if not form.get("image"):
            errors["image"] = "Choose an image."
        spec["image"] = form.get("image", "")
    elif source == "volume":
        if not form.get("bootVolume"):
            errors["bootVolume"] = "Choose a volume to boot from."
        spec["bootVolume"] = form.get("bootVolume", "")
    elif source == "containerDisk":
        if not (form.get("containerDisk") or "").strip():
            errors["containerDisk"] = "Give a container disk image reference."
        spec["containerDisk"] = (form.get("containerDisk") or "").strip()
    else:
        errors["source"] = "Choose an image, a volume or a container disk."
    for key in ("keyPair", "serverGroup"):
        if form.get(key):
            spec[key] = form[key]
    networks = [n.strip() for n in re.split(r"[,\s]+", form.get("networks") or "") if n.strip()]
    for n in networks:
        if not LABEL_RE.match(n):
            errors["networks"] = f"{n!r} is not a network name."
    if networks:
        spec["networks"] = [{"name": n} for n in networks]
    if form.get("userData"):
        spec["userData"] = form["userData"]
    body = {"apiVersion": API_VERSION, "kind": "Server", "metadata": {"name": name}, "spec": spec}
    return body, errors


def volume_from_form(form: dict) -> tuple[dict, FormErrors]:
    errors = FormErrors()
    name = _name(form, errors)
    size = (form.get("size") or "").strip()
    if size.isdigit():
        size += "Gi"
    if not SIZE_RE.match(size):
        errors["size"] = "A size such as 10Gi."
    spec: dict = {"size": size}
    if form.get("volumeType"):
        spec["volumeType"] = form["volumeType"]
    if form.get("sourceImage"):
        spec["source"] = {"image": form["sourceImage"]}
    if form.get("description"):
        spec["description"] = form["description"]
    return {"apiVersion": API_VERSION, "kind": "Volume", "metadata": {"name": name}, "spec": spec}, errors


def image_from_form(form: dict) -> tuple[dict, FormErrors]:
    errors = FormErrors()
    name = _name(form, errors)
    url = (form.get("url") or "").strip()
    if not re.match(r"^https?://\S+$", url):
        errors["url"] = "An http:// or https:// URL."
    sha = (form.get("sha256") or "").strip().lower()
    if not SHA256_RE.match(sha):
        errors["sha256"] = "The sha256 of the file: 64 hex digits."
    fmt = form.get("diskFormat") or "qcow2"
    if fmt not in ("qcow2", "raw", "iso"):
        errors["diskFormat"] = "qcow2, raw or iso."
    spec = {"source": {"http": {"url": url, "sha256": sha}}, "diskFormat": fmt}
    return {"apiVersion": API_VERSION, "kind": "Image", "metadata": {"name": name}, "spec": spec}, errors


def keypair_from_form(form: dict) -> tuple[dict, FormErrors]:
    errors = FormErrors()
    name = _name(form, errors)
    key = (form.get("publicKey") or "").strip()
    if not re.match(r"^(ssh-rsa|ssh-ed25519|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$", key):
        errors["publicKey"] = "An OpenSSH public key line (ssh-ed25519 AAAA... comment)."
    return {"apiVersion": API_VERSION, "kind": "KeyPair", "metadata": {"name": name}, "spec": {"publicKey": key}}, errors


def bucket_from_form(form: dict) -> tuple[dict, FormErrors]:
    errors = FormErrors()
    name = _name(form, errors)
    spec = {"bucketClassName": form.get("bucketClassName") or "default"}
    return {"apiVersion": API_VERSION, "kind": "Bucket", "metadata": {"name": name}, "spec": spec}, errors


DATABASE_ENGINES = ("postgresql", "mariadb")


def database_from_form(form: dict) -> tuple[dict, FormErrors]:
    errors = FormErrors()
    name = _name(form, errors)
    engine = form.get("engine") or ""
    if engine not in DATABASE_ENGINES:
        errors["engine"] = "Choose postgresql or mariadb."
    size = (form.get("size") or "").strip()
    size = size + "Gi" if size.isdigit() else size
    if not SIZE_RE.match(size):
        errors["size"] = "A size such as 10Gi."
    instances = (form.get("instances") or "1").strip()
    if not instances.isdigit() or not 1 <= int(instances) <= 9:
        errors["instances"] = "From 1 to 9."
    spec: dict = {"engine": engine, "storage": {"size": size}, "instances": int(instances) if instances.isdigit() else 1}
    for field in ("version", "flavor"):
        if (form.get(field) or "").strip():
            spec[field] = form[field].strip()
    return {"apiVersion": API_VERSION, "kind": "Database", "metadata": {"name": name}, "spec": spec}, errors


def api_field_errors(causes: dict[str, str]) -> FormErrors:
    """The API server's field paths (spec.flavor, metadata.name, spec.networks[0].name) as
    the form's field names."""
    out = FormErrors()
    for path, message in causes.items():
        tail = path.removeprefix("spec.").removeprefix("metadata.")
        field = re.split(r"[.\[]", tail, maxsplit=1)[0]
        if field == "source" and "http" in tail:
            field = "url" if "url" in tail else "sha256"
        if field == "storage":
            field = "size"
        out.setdefault(field, message)
    return out


#: Server actions: what the form sends -> (merge patch body or "delete").
SERVER_ACTIONS: dict[str, t.Any] = {
    "start": {"spec": {"powerState": "Running"}},
    "stop": {"spec": {"powerState": "Stopped"}},
    "pause": {"spec": {"powerState": "Paused"}},
    "reboot": {"metadata": {"annotations": {"stratus.dev/reboot": "hard"}}},
    "soft-reboot": {"metadata": {"annotations": {"stratus.dev/reboot": "soft"}}},
    "migrate": {"metadata": {"annotations": {"stratus.dev/migrate": ""}}},
    "resize": "spec.flavor",   # the form names the new flavor
    "rebuild": "spec.image",   # the form names the image
    "delete": "delete",
}
