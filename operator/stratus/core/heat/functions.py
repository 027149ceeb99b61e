"""The HOT intrinsic functions, evaluated over plain data.

``Evaluator.evaluate(snippet, path)`` walks a snippet: a map with exactly one key that
is a function of the template's version is a call; a key that is a function of another
version only is an error naming the path (``resources.web.properties.x: Fn::Join is not
a function of HOT 2016-10-14 ...``). Resource references go through a ``lookup``:

- at validation there is none: ``get_resource`` / ``get_attr`` check that the resource
  (and the attribute) exist, record the dependency and yield a ``Placeholder``, which
  every function passes on, so a whole template can be evaluated before anything exists;
- at creation the lookup returns the reference and attributes of resources already
  created, or raises ``Pending`` for one that is not.
"""

from __future__ import annotations

import collections.abc  # noqa: F401  (yaql 3.2 uses collections.abc without importing it)
import hashlib
import itertools
import json
import typing as t
import urllib.parse

from .errors import HeatError, join
from .versions import ALL_FUNCTIONS, Version


class Placeholder:
    """A value known only once a resource exists (at validation and in previews)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return f"<{self.text}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Placeholder) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


class Pending(Exception):
    """A referenced resource is not created yet."""

    def __init__(self, resource: str):
        super().__init__(resource)
        self.resource = resource


class _Omit:
    """`if` chose a null branch: the enclosing property is left out (as in Heat)."""

    def __repr__(self) -> str:
        return "<omit>"


OMIT = _Omit()


def has_placeholder(value) -> bool:
    if isinstance(value, Placeholder):
        return True
    if isinstance(value, dict):
        return any(has_placeholder(k) or has_placeholder(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_placeholder(v) for v in value)
    return False


def _text(args) -> str:
    return json.dumps(args, default=repr)[:200]


class Lookup(t.Protocol):
    def reference(self, name: str) -> object: ...
    def attribute(self, name: str, attr: str, path: list) -> object: ...


class Scope(t.Protocol):
    """What functions read from a stack (or a nested stack) being evaluated."""
    version: Version
    params: dict
    stack_name: str
    stack_id: str
    project_id: str
    files: dict
    conditions: dict

    def has_resource(self, name: str) -> bool: ...
    def resource_enabled(self, name: str) -> bool: ...
    def attribute_error(self, name: str, attr: str) -> str | None: ...
    def facade(self, section: str) -> object: ...


class Evaluator:
    def __init__(self, scope: Scope, lookup: Lookup | None = None, deps: set | None = None,
                 conditions_only: bool = False, resolve_condition=None):
        self.scope = scope
        self.lookup = lookup
        self.deps = deps if deps is not None else set()
        self.conditions_only = conditions_only
        self.resolve_condition = resolve_condition

    # -- walking --------------------------------------------------------------------
    def evaluate(self, snippet, path: str):
        value = self._eval(snippet, path)
        return None if value is OMIT else value

    def _eval(self, snippet, path: str):
        if isinstance(snippet, dict):
            if len(snippet) == 1:
                (key, args), = snippet.items()
                if isinstance(key, str) and key in ALL_FUNCTIONS:
                    allowed = self.scope.version.condition_functions if self.conditions_only else self.scope.version.functions
                    if key not in allowed:
                        where = "the conditions section" if self.conditions_only else f"HOT {self.scope.version.date}"
                        raise HeatError(path, f"{key} is not a function of {where}"
                                        + ("" if self.conditions_only else _hint(key, self.scope.version)))
                    return getattr(self, "fn_" + key.replace("::", "_").lower())(args, join(path, key))
            out = {}
            for k, v in snippet.items():
                value = self._eval(v, join(path, k))
                if value is not OMIT:
                    out[k] = value
            return out
        if isinstance(snippet, list):
            return [v for v in (self._eval(item, join(path, i)) for i, item in enumerate(snippet)) if v is not OMIT]
        return snippet

    def _args(self, args, path, n=None, kinds=(list,)):
        value = self._eval(args, path)
        if n is not None and (not isinstance(value, list) or len(value) not in (n if isinstance(n, tuple) else (n,))):
            raise HeatError(path, f"takes a list of {n if not isinstance(n, tuple) else ' or '.join(map(str, n))} arguments")
        return value

    # -- parameters and resources ---------------------------------------------------
    def fn_get_param(self, args, path):
        args = self._eval(args, path)
        names = args if isinstance(args, list) else [args]
        if not names or not isinstance(names[0], str):
            raise HeatError(path, "takes a parameter name, optionally followed by keys or indexes")
        name = names[0]
        if name == "OS::stack_name":
            value = self.scope.stack_name
        elif name == "OS::stack_id":
            value = self.scope.stack_id
        elif name == "OS::project_id":
            value = self.scope.project_id
        elif name not in self.scope.params:
            raise HeatError(path.rsplit(".get_param", 1)[0], f"get_param refers to unknown parameter {name!r}")
        else:
            value = self.scope.params[name]
        return _select(value, names[1:], path)

    def fn_get_resource(self, args, path):
        name = self._eval(args, path)
        self._check_resource(name, path, "get_resource")
        self.deps.add(name)
        if self.lookup is None:
            return Placeholder(f"get_resource {name}")
        return self.lookup.reference(name)

    def fn_ref(self, args, path):
        name = self._eval(args, path)
        if name in self.scope.params or name in ("OS::stack_name", "OS::stack_id", "AWS::StackName", "AWS::StackId"):
            return self.fn_get_param({"AWS::StackName": "OS::stack_name", "AWS::StackId": "OS::stack_id"}.get(name, name), path)
        return self.fn_get_resource(name, path)

    def _check_resource(self, name, path, fn):
        if not isinstance(name, str):
            raise HeatError(path, f"{fn} takes a resource name")
        if not self.scope.has_resource(name):
            raise HeatError(path.rsplit("." + fn, 1)[0], f"{fn} refers to unknown resource {name!r}")
        if not self.scope.resource_enabled(name):
            raise HeatError(path.rsplit("." + fn, 1)[0], f"{fn} refers to resource {name!r}, whose condition is false")

    def fn_get_attr(self, args, path):
        args = self._eval(args, path)
        if not isinstance(args, list) or not args or (len(args) < 2 and not self.scope.version.at_least("2015-10-15")):
            raise HeatError(path, "takes [resource, attribute, key...]")
        name, attr, rest = args[0], (args[1] if len(args) > 1 else None), args[2:]
        self._check_resource(name, path, "get_attr")
        if isinstance(attr, Placeholder):
            raise HeatError(path, "the attribute name must be known before creation")
        if attr is not None:
            error = self.scope.attribute_error(name, attr)
            if error:
                raise HeatError(path.rsplit(".get_attr", 1)[0], error)
        self.deps.add(name)
        if self.lookup is None:
            return Placeholder(f"get_attr {_text(args)}")
        value = self.lookup.attribute(name, attr, rest)
        return value

    def fn_get_file(self, args, path):
        key = self._eval(args, path)
        if not isinstance(key, str):
            raise HeatError(path, "takes a file name")
        files = self.scope.files
        if key not in files:
            raise HeatError(path, f"the file {key!r} is not among the stack's files; add it to spec.files")
        return files[key]

    def fn_resource_facade(self, args, path):
        section = self._eval(args, path)
        if section not in ("metadata", "deletion_policy", "update_policy"):
            raise HeatError(path, "takes metadata, deletion_policy or update_policy")
        return self.scope.facade(section)

    fn_fn_resourcefacade = fn_resource_facade

    # -- strings and lists ------------------------------------------------------------
    def fn_list_join(self, args, path):
        args = self._eval(args, path)
        if not isinstance(args, list) or len(args) < 2 or (len(args) > 2 and not self.scope.version.at_least("2015-10-15")):
            raise HeatError(path, "takes [delimiter, list]" + (" or more lists" if self.scope.version.at_least("2015-10-15") else ""))
        if has_placeholder(args):
            return Placeholder(f"list_join {_text(args)}")
        delim, lists = args[0], args[1:]
        if not isinstance(delim, str):
            raise HeatError(path, "the delimiter must be a string")
        items = []
        for i, lst in enumerate(lists):
            if lst is None:
                continue
            if isinstance(lst, str):
                try:
                    lst = json.loads(lst)
                except json.JSONDecodeError:
                    raise HeatError(join(path, i + 1), "must be a list") from None
            if not isinstance(lst, list):
                raise HeatError(join(path, i + 1), "must be a list")
            for item in lst:
                if isinstance(item, (dict, list)):
                    if not self.scope.version.at_least("2015-10-15"):
                        raise HeatError(join(path, i + 1), "items must be strings in this template version")
                    item = json.dumps(item)
                items.append("" if item is None else str(item) if not isinstance(item, str) else item)
        return delim.join(items)

    def fn_fn_join(self, args, path):
        args = self._args(args, path, 2)
        if has_placeholder(args):
            return Placeholder(f"Fn::Join {_text(args)}")
        delim, items = args
        if not isinstance(items, list):
            raise HeatError(path, "takes [delimiter, list]")
        return delim.join("" if i is None else str(i) for i in items)

    def _replace(self, args, path, strict: str = ""):
        args = self._eval(args, path)
        if not isinstance(args, dict) or "template" not in args or "params" not in args:
            raise HeatError(path, "takes template and params")
        template, params = args["template"], args["params"]
        if has_placeholder(args):
            return Placeholder(f"str_replace {_text(args)}")
        if not isinstance(template, str):
            raise HeatError(join(path, "template"), "must be a string")
        if not isinstance(params, dict):
            raise HeatError(join(path, "params"), "must be a map")
        out = template
        for key in sorted(params, key=lambda k: (-len(str(k)), str(k))):
            value = params[key]
            if isinstance(value, (dict, list)):
                if not self.scope.version.at_least("2015-10-15"):
                    raise HeatError(join(path, "params", key), "must be a string or number in this template version")
                value = json.dumps(value)
            elif value is None:
                if strict == "vstrict":
                    raise HeatError(join(path, "params", key), "is empty (str_replace_vstrict)")
                value = ""
            elif isinstance(value, bool):
                value = "true" if value else "false"
            if strict and str(key) not in out:
                raise HeatError(join(path, "params", key), f"{key!r} does not occur in the template ({'str_replace_' + strict})")
            out = out.replace(str(key), str(value))
        return out

    def fn_str_replace(self, args, path):
        return self._replace(args, path)

    def fn_str_replace_strict(self, args, path):
        return self._replace(args, path, "strict")

    def fn_str_replace_vstrict(self, args, path):
        return self._replace(args, path, "vstrict")

    def fn_fn_replace(self, args, path):
        args = self._args(args, path, 2)
        return self._replace({"template": args[1], "params": args[0]}, path)

    def fn_str_split(self, args, path):
        args = self._args(args, path, (2, 3))
        if has_placeholder(args):
            return Placeholder(f"str_split {_text(args)}")
        delim, text = args[0], args[1]
        if not isinstance(delim, str) or not isinstance(text, str):
            raise HeatError(path, "takes [delimiter, string, (index)]")
        parts = text.split(delim)
        if len(args) == 3:
            try:
                return parts[int(args[2])]
            except (ValueError, IndexError):
                raise HeatError(join(path, 2), f"index {args[2]!r} is out of range for {len(parts)} parts") from None
        return parts

    def fn_fn_split(self, args, path):
        return self.fn_str_split(args, path)

    def fn_fn_select(self, args, path):
        args = self._args(args, path, 2)
        if has_placeholder(args):
            return Placeholder(f"Fn::Select {_text(args)}")
        index, collection = args
        if isinstance(collection, str):
            try:
                collection = json.loads(collection)
            except json.JSONDecodeError:
                pass
        try:
            if isinstance(collection, dict):
                return collection.get(index, "")
            return collection[int(index)]
        except (IndexError, ValueError, TypeError):
            return ""

    def fn_fn_base64(self, args, path):
        return self._eval(args, path)

    def fn_fn_getazs(self, args, path):
        return ["nova"]

    def fn_fn_memberlisttomap(self, args, path):
        args = self._args(args, path, 3)
        key_name, value_name, members = args
        out, keys, values = {}, {}, {}
        for member in members or []:
            k, _, v = str(member).partition("=")
            prefix, _, field = k.rpartition(".")
            (keys if field == key_name else values)[prefix.rsplit(".", 1)[0]] = v
        for prefix, k in keys.items():
            out[k] = values.get(prefix)
        return out

    def fn_digest(self, args, path):
        args = self._args(args, path, 2)
        if has_placeholder(args):
            return Placeholder(f"digest {_text(args)}")
        algorithm, value = args
        if algorithm not in hashlib.algorithms_available:
            raise HeatError(join(path, 0), f"unknown digest algorithm {algorithm!r}")
        return hashlib.new(algorithm, str(value).encode()).hexdigest()

    def fn_repeat(self, args, path):
        if not isinstance(args, dict) or "for_each" not in args or "template" not in args:
            raise HeatError(path, "takes for_each and template")
        for_each = self._eval(args["for_each"], join(path, "for_each"))
        permutations = self._eval(args.get("permutations", True), join(path, "permutations"))
        if not isinstance(for_each, dict) or not for_each:
            raise HeatError(join(path, "for_each"), "must map placeholders to lists")
        if has_placeholder(for_each):
            return Placeholder(f"repeat {_text(args)}")
        keys = list(for_each)
        for k in keys:
            if not isinstance(for_each[k], list):
                raise HeatError(join(path, "for_each", k), "must be a list")
        if permutations:
            combos = itertools.product(*(for_each[k] for k in keys))
        else:
            sizes = {len(for_each[k]) for k in keys}
            if len(sizes) > 1:
                raise HeatError(join(path, "for_each"), "lists must be of the same length when permutations is false")
            combos = zip(*(for_each[k] for k in keys))
        template = self._eval(args["template"], join(path, "template"))
        return [_substitute(template, dict(zip(keys, combo))) for combo in combos]

    def fn_map_merge(self, args, path):
        args = self._eval(args, path)
        if not isinstance(args, list):
            raise HeatError(path, "takes a list of maps")
        if has_placeholder(args):
            return Placeholder(f"map_merge {_text(args)}")
        out = {}
        for i, m in enumerate(args):
            if m is None:
                continue
            if not isinstance(m, dict):
                raise HeatError(join(path, i), "must be a map")
            out.update(m)
        return out

    def fn_map_replace(self, args, path):
        args = self._eval(args, path)
        if not isinstance(args, dict) or "map" not in args:
            raise HeatError(path, "takes map, and keys and/or values")
        if has_placeholder(args):
            return Placeholder(f"map_replace {_text(args)}")
        source, keys, values = args["map"], args.get("keys") or {}, args.get("values") or {}
        if not isinstance(source, dict):
            raise HeatError(join(path, "map"), "must be a map")
        out = {}
        for k, v in source.items():
            nk = keys.get(k, k)
            if nk in out:
                raise HeatError(join(path, "keys"), f"replacing {k!r} with {nk!r} collides with an existing key")
            out[nk] = values.get(v, v) if isinstance(v, (str, int, float, bool)) or v is None else v
        return out

    def fn_list_concat(self, args, path, unique=False):
        args = self._eval(args, path)
        if not isinstance(args, list):
            raise HeatError(path, "takes a list of lists")
        if has_placeholder(args):
            return Placeholder(f"list_concat {_text(args)}")
        out = []
        for i, lst in enumerate(args):
            if lst is None:
                continue
            if not isinstance(lst, list):
                raise HeatError(join(path, i), "must be a list")
            for item in lst:
                if not unique or item not in out:
                    out.append(item)
        return out

    def fn_list_concat_unique(self, args, path):
        return self.fn_list_concat(args, path, unique=True)

    def fn_filter(self, args, path):
        args = self._args(args, path, 2)
        if has_placeholder(args):
            return Placeholder(f"filter {_text(args)}")
        remove, items = args
        if not isinstance(items, list):
            raise HeatError(join(path, 1), "must be a list")
        remove = remove if isinstance(remove, list) else [remove]
        return [i for i in items if i not in remove]

    def fn_make_url(self, args, path):
        args = self._eval(args, path)
        if not isinstance(args, dict) or not set(args) <= {"scheme", "username", "password", "host", "port", "path", "query", "fragment"}:
            raise HeatError(path, "takes scheme, username, password, host, port, path, query, fragment")
        if has_placeholder(args):
            return Placeholder(f"make_url {_text(args)}")
        host = str(args.get("host", ""))
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        user = args.get("username")
        if user:
            user = urllib.parse.quote(str(user), safe="")
            if args.get("password"):
                user += ":" + urllib.parse.quote(str(args["password"]), safe="")
            host = f"{user}@{host}"
        if args.get("port") not in (None, ""):
            port = int(args["port"])
            if not 1 <= port <= 65535:
                raise HeatError(join(path, "port"), f"{port} is not a port number")
            host += f":{port}"
        url_path = urllib.parse.quote(str(args.get("path", "")))
        if url_path and not url_path.startswith("/"):
            url_path = "/" + url_path
        query = args.get("query") or {}
        return urllib.parse.urlunsplit((args.get("scheme", ""), host, url_path,
                                        urllib.parse.urlencode(query) if isinstance(query, dict) else str(query),
                                        urllib.parse.quote(str(args.get("fragment", "")))))

    def fn_yaql(self, args, path):
        args = self._eval(args, path)
        if not isinstance(args, dict) or "expression" not in args:
            raise HeatError(path, "takes expression and data")
        if has_placeholder(args):
            return Placeholder(f"yaql {_text(args)}")
        expression = args["expression"]
        if not isinstance(expression, str):
            raise HeatError(join(path, "expression"), "must be a string")
        import yaql
        from yaql.language import exceptions as yaql_errors
        try:
            parsed = _yaql_engine().__call__(expression)
            result = parsed.evaluate(data={"data": args.get("data")}, context=yaql.create_context())
        except (yaql_errors.YaqlException, ValueError, TypeError, KeyError, IndexError) as exc:
            raise HeatError(join(path, "expression"), f"yaql failed: {exc}") from None
        return _plain(result)

    # -- conditions ---------------------------------------------------------------------
    def fn_equals(self, args, path):
        args = self._args(args, path, 2)
        if has_placeholder(args):
            return Placeholder(f"equals {_text(args)}")
        return args[0] == args[1]

    def _condition(self, value, path):
        """A condition argument: a boolean, a condition name, or an expression."""
        if isinstance(value, str) and not isinstance(value, bool):
            if self.resolve_condition is None:
                raise HeatError(path, f"{value!r} is not a condition")
            return self.resolve_condition(value, path)
        value = self._eval(value, path)
        if isinstance(value, Placeholder):
            return value
        if not isinstance(value, bool):
            raise HeatError(path, f"a condition must be true or false, not {value!r}")
        return value

    def fn_not(self, args, path):
        value = self._condition(args, path)
        return value if isinstance(value, Placeholder) else not value

    def fn_and(self, args, path):
        if not isinstance(args, list) or len(args) < 2:
            raise HeatError(path, "takes a list of at least two conditions")
        return all(self._condition(a, join(path, i)) for i, a in enumerate(args))

    def fn_or(self, args, path):
        if not isinstance(args, list) or len(args) < 2:
            raise HeatError(path, "takes a list of at least two conditions")
        return any(self._condition(a, join(path, i)) for i, a in enumerate(args))

    def fn_contains(self, args, path):
        args = self._args(args, path, 2)
        if has_placeholder(args):
            return Placeholder(f"contains {_text(args)}")
        value, seq = args
        if not isinstance(seq, (list, str, dict)):
            raise HeatError(join(path, 1), "must be a list, a map or a string")
        return value in seq

    def fn_if(self, args, path):
        if not isinstance(args, list) or len(args) != 3:
            raise HeatError(path, "takes [condition, value_if_true, value_if_false]")
        chosen = self._condition(args[0], join(path, 0))
        if isinstance(chosen, Placeholder):
            raise HeatError(join(path, 0), "the condition must be known before creation")
        # Only the chosen branch is evaluated: as in Heat, the other may refer to a
        # resource that the same condition removed.
        value = self._eval(args[1 if chosen else 2], join(path, 1 if chosen else 2))
        return OMIT if value is None else value


def _hint(key: str, version: Version) -> str:
    from .versions import VERSIONS
    having = [v.date for v in VERSIONS.values() if key in v.functions]
    if having and max(having) < version.date:
        return f" (HOT {', '.join(having)} only; use the HOT equivalent)"
    if having:
        return f" (it needs heat_template_version {min(having)} or later)"
    return ""


def _select(value, keys: list, path: str):
    for key in keys:
        if isinstance(value, Placeholder):
            return value
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        try:
            if isinstance(value, list):
                value = value[int(key)]
            elif isinstance(value, dict):
                value = value[key]
            else:
                raise KeyError(key)
        except (KeyError, IndexError, ValueError, TypeError):
            raise HeatError(path, f"no key or index {key!r} in the value") from None
    return value


def _substitute(template, values: dict):
    if isinstance(template, str):
        for k in sorted(values, key=lambda k: -len(str(k))):
            if template == k:
                return values[k]
            template = template.replace(str(k), str(values[k]))
        return template
    if isinstance(template, dict):
        return {_substitute(k, values): _substitute(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_substitute(v, values) for v in template]
    return template


def _plain(value):
    if isinstance(value, dict) or type(value).__name__ == "FrozenDict":
        return {k: _plain(v) for k, v in dict(value).items()}
    if isinstance(value, (list, tuple, set, frozenset)) or (hasattr(value, "__iter__") and not isinstance(value, (str, bytes, dict))):
        return [_plain(v) for v in value]
    return value


_engine = None


def _yaql_engine():
    global _engine
    if _engine is None:
        import yaql

        _engine = yaql.factory.YaqlFactory().create(options={"yaql.limitIterators": 1000, "yaql.memoryQuota": 100000})
    return _engine
