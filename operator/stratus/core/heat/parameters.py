"""HOT parameters: types, defaults, constraints (length, range, modulo, allowed_values,
allowed_pattern, custom_constraint) and parameter_groups.

Custom constraints are checked against the names the caller passes in ``catalog``
(``{"nova.flavor": {...}, "nova.keypair": {...}, "glance.image": {...},
"neutron.network": {...}}``): the controller lists the cluster's Flavors, KeyPairs,
Images and networks, the engine stays pure. A custom constraint the catalog does not
list is not checked (Heat without that service's plugin skips it too).
"""

from __future__ import annotations

import json
import re

from .errors import HeatError, join

TYPES = ("string", "number", "comma_delimited_list", "json", "boolean")
TYPE_ALIASES = {"String": "string", "Number": "number", "CommaDelimitedList": "comma_delimited_list",
                "Json": "json", "Boolean": "boolean", "list": "comma_delimited_list", "integer": "number",
                "float": "number"}
SCHEMA_KEYS = {"type", "label", "description", "default", "hidden", "constraints", "immutable", "tags"}
CONSTRAINT_KEYS = {"length", "range", "modulo", "allowed_values", "allowed_pattern", "custom_constraint", "description"}
TRUE = {"true", "t", "yes", "y", "on", "1"}
FALSE = {"false", "f", "no", "n", "off", "0"}
#: Pseudo parameters every stack has.
PSEUDO = ("OS::stack_name", "OS::stack_id", "OS::project_id")


def parse_schemas(section: object, path: str = "parameters") -> dict[str, dict]:
    """Check the parameters section; returns {name: schema} with the type normalised."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise HeatError(path, "must be a map of parameter names to their definitions")
    out = {}
    for name, schema in section.items():
        where = join(path, name)
        if not isinstance(schema, dict):
            raise HeatError(where, "a parameter definition must be a map with at least 'type'")
        unknown = set(schema) - SCHEMA_KEYS
        if unknown:
            raise HeatError(join(where, sorted(unknown)[0]), "unknown key in a parameter definition; "
                            "allowed: " + ", ".join(sorted(SCHEMA_KEYS)))
        type_ = TYPE_ALIASES.get(schema.get("type"), schema.get("type"))
        if type_ not in TYPES:
            raise HeatError(join(where, "type"), f"{schema.get('type')!r} is not a parameter type; use one of "
                            + ", ".join(TYPES))
        constraints = schema.get("constraints") or []
        if not isinstance(constraints, list):
            raise HeatError(join(where, "constraints"), "must be a list")
        for i, c in enumerate(constraints):
            cpath = join(where, "constraints", i)
            if not isinstance(c, dict) or not (set(c) - {"description"}):
                raise HeatError(cpath, "a constraint is a map with one of " + ", ".join(sorted(CONSTRAINT_KEYS - {"description"})))
            bad = set(c) - CONSTRAINT_KEYS
            if bad:
                raise HeatError(join(cpath, sorted(bad)[0]), "unknown constraint")
            if "range" in c or "length" in c:
                key = "range" if "range" in c else "length"
                if not isinstance(c[key], dict) or not set(c[key]) <= {"min", "max"} or not c[key]:
                    raise HeatError(join(cpath, key), "takes min and/or max")
                if key == "range" and type_ != "number":
                    raise HeatError(join(cpath, key), f"a range constraint applies to numbers, not {type_}")
                if key == "length" and type_ not in ("string", "comma_delimited_list", "json"):
                    raise HeatError(join(cpath, key), f"a length constraint does not apply to {type_}")
            if "allowed_pattern" in c:
                if type_ != "string":
                    raise HeatError(join(cpath, "allowed_pattern"), "applies to strings only")
                try:
                    re.compile(c["allowed_pattern"])
                except (re.error, TypeError) as exc:
                    raise HeatError(join(cpath, "allowed_pattern"), f"not a valid regular expression: {exc}") from None
            if "allowed_values" in c and not isinstance(c["allowed_values"], list):
                raise HeatError(join(cpath, "allowed_values"), "must be a list")
        out[name] = {**schema, "type": type_, "constraints": constraints}
        if "default" in schema and schema["default"] is not None:
            # A default must satisfy the type (Heat checks it at validation too).
            convert(type_, schema["default"], join(where, "default"))
    return out


def convert(type_: str, value: object, path: str) -> object:
    """A value given for a parameter, as the parameter's type."""
    if type_ == "string":
        if isinstance(value, (dict, list)):
            raise HeatError(path, f"expected a string, got {type(value).__name__}")
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)
    if type_ == "number":
        if isinstance(value, bool):
            raise HeatError(path, f"expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return value
        try:
            text = str(value).strip()
            return int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
        except ValueError:
            raise HeatError(path, f"expected a number, got {value!r}") from None
    if type_ == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in TRUE:
            return True
        if text in FALSE:
            return False
        raise HeatError(path, f"expected a boolean (true/false, yes/no, on/off, 1/0), got {value!r}")
    if type_ == "comma_delimited_list":
        if isinstance(value, list):
            return [str(v) if not isinstance(v, str) else v for v in value]
        if value is None or value == "":
            return []
        if isinstance(value, dict):
            raise HeatError(path, "expected a comma-delimited list, got a map")
        return [part.strip() for part in str(value).split(",")]
    if type_ == "json":
        if isinstance(value, (dict, list)):
            return value
        if value is None or value == "":
            return {}
        try:
            parsed = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError as exc:
            raise HeatError(path, f"expected JSON: {exc.msg}") from None
        if not isinstance(parsed, (dict, list)):
            raise HeatError(path, "expected a JSON map or list")
        return parsed
    raise HeatError(path, f"unknown type {type_}")


def check_constraints(name: str, schema: dict, value: object, path: str, catalog: dict[str, set[str]] | None) -> None:
    """HeatError naming the parameter when ``value`` breaks one of its constraints."""
    for c in schema.get("constraints") or []:
        why = c.get("description")
        fail = None
        if "length" in c:
            size = len(value) if isinstance(value, (str, list, dict)) else len(str(value))
            lo, hi = c["length"].get("min"), c["length"].get("max")
            if (lo is not None and size < lo) or (hi is not None and size > hi):
                fail = f"length must be {_bounds(lo, hi)}, is {size}"
        if "range" in c:
            lo, hi = c["range"].get("min"), c["range"].get("max")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                fail = f"must be {_bounds(lo, hi)}, is {value}"
        if "modulo" in c:
            step, offset = c["modulo"].get("step", 1), c["modulo"].get("offset", 0)
            if step and (value - offset) % step:
                fail = f"must be {offset} plus a multiple of {step}, is {value}"
        if "allowed_values" in c:
            allowed = c["allowed_values"]
            values = value if isinstance(value, list) and schema["type"] == "comma_delimited_list" else [value]
            for v in values:
                if v not in allowed and str(v) not in [str(a) for a in allowed]:
                    fail = f"{v!r} is not one of the allowed values " + ", ".join(repr(a) for a in allowed)
                    break
        if "allowed_pattern" in c and not re.fullmatch(c["allowed_pattern"], str(value)):
            fail = f"{value!r} does not match the pattern {c['allowed_pattern']!r}"
        if "custom_constraint" in c:
            known = (catalog or {}).get(c["custom_constraint"])
            if known is not None:
                values = value if isinstance(value, list) else [value]
                for v in values:
                    if v not in known:
                        what = {"nova.flavor": "Flavor", "nova.keypair": "KeyPair", "glance.image": "Image",
                                "neutron.network": "network", "cinder.volume": "Volume",
                                "cinder.vtype": "VolumeType"}.get(c["custom_constraint"], c["custom_constraint"])
                        fail = (f"{what} {v!r} does not exist ({c['custom_constraint']}); "
                                + ("known: " + ", ".join(sorted(known)) if known else "there are none"))
                        break
        if fail:
            raise HeatError(path, f"parameter {name!r}: {why + ' (' + fail + ')' if why else fail}")


def _bounds(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}"
    return f"at least {lo}" if lo is not None else f"at most {hi}"


def resolve(schemas: dict[str, dict], given: dict[str, object], defaults: dict[str, object],
            catalog: dict[str, set[str]] | None = None, path: str = "parameters") -> tuple[dict, list[HeatError]]:
    """Values of every parameter: given > environment parameter_defaults > template default.
    Returns (values, errors); a parameter with no value anywhere is an error."""
    values, errors = {}, []
    for name in given:
        if name not in schemas and name not in PSEUDO:
            errors.append(HeatError(join(path, name), "given, but the template has no such parameter"))
    for name, schema in schemas.items():
        where = join(path, name)
        if name in given:
            raw = given[name]
        elif name in defaults:
            raw = defaults[name]
        elif "default" in schema:
            raw = schema["default"]
        else:
            errors.append(HeatError(where, "no value: the template gives no default; pass it in spec.parameters"))
            continue
        try:
            value = convert(schema["type"], raw, where)
            check_constraints(name, schema, value, where, catalog)
        except HeatError as exc:
            if schema.get("hidden"):  # never echo a hidden value, not even in an error
                descriptions = [c["description"] for c in schema.get("constraints") or [] if c.get("description")]
                exc = HeatError(where, f"parameter {name!r}: the hidden value is not a valid {schema['type']} or breaks "
                                "a constraint" + (f" ({'; '.join(descriptions)})" if descriptions else ""))
            errors.append(exc)
            continue
        values[name] = value
    return values, errors


def check_groups(groups: object, schemas: dict, path: str = "parameter_groups") -> None:
    if groups is None:
        return
    if not isinstance(groups, list):
        raise HeatError(path, "must be a list of groups")
    seen: dict[str, int] = {}
    for i, group in enumerate(groups):
        where = join(path, i)
        if not isinstance(group, dict):
            raise HeatError(where, "a group is a map with label, description and parameters")
        params = group.get("parameters")
        if not isinstance(params, list):
            raise HeatError(join(where, "parameters"), "a group must list its parameters")
        for j, name in enumerate(params):
            if name not in schemas:
                raise HeatError(join(where, "parameters", j), f"the parameter {name!r} is not defined in parameters")
            if name in seen:
                raise HeatError(join(where, "parameters", j), f"the parameter {name!r} is already in group {seen[name]}")
            seen[name] = i
