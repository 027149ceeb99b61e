"""HOT template versions and the functions each one knows.

Each version carries its own function table (as Heat's ``HOTemplate20xx`` classes do) and
the functions allowed inside the ``conditions`` section. A function that exists in some
version but not in the template's own is an error naming the path; a single-key map whose
key is no function of any version is plain data, as in Heat.
"""

from __future__ import annotations

import dataclasses
import datetime

from .errors import HeatError

CFN_2013 = {"Fn::GetAZs", "Ref", "Fn::Select", "Fn::Join", "Fn::Split", "Fn::Replace", "Fn::Base64",
            "Fn::MemberListToMap", "Fn::ResourceFacade"}
HOT_2013 = {"get_param", "get_resource", "get_attr", "list_join", "str_replace", "resource_facade", "get_file"}
V2014 = HOT_2013 | {"Fn::Select"}
V2015_04 = V2014 | {"digest", "repeat"}
V2015_10 = (V2015_04 - {"Fn::Select"}) | {"str_split"}
V2016_04 = V2015_10 | {"map_merge"}
V2016_10 = V2016_04 | {"map_replace", "yaql", "if"}
V2017_02 = V2016_10 | {"filter", "str_replace_strict"}
V2017_09 = V2017_02 | {"make_url", "list_concat", "list_concat_unique", "contains", "str_replace_vstrict"}

COND_2016 = {"equals", "get_param", "not", "and", "or"}
COND_2017_02 = COND_2016 | {"yaql"}
COND_2017_09 = COND_2017_02 | {"contains"}
COND_2021 = COND_2017_09 | {"if"}


@dataclasses.dataclass(frozen=True)
class Version:
    date: str
    functions: frozenset[str]
    condition_functions: frozenset[str]
    aliases: tuple[str, ...] = ()

    @property
    def has_conditions(self) -> bool:
        return bool(self.condition_functions)

    def at_least(self, date: str) -> bool:
        return self.date >= date

    @property
    def sections(self) -> frozenset[str]:
        base = {"heat_template_version", "description", "parameter_groups", "parameters", "resources", "outputs"}
        return frozenset(base | ({"conditions"} if self.has_conditions else set()))


VERSIONS: dict[str, Version] = {v.date: v for v in (
    Version("2013-05-23", frozenset(HOT_2013 | CFN_2013), frozenset()),
    Version("2014-10-16", frozenset(V2014), frozenset()),
    Version("2015-04-30", frozenset(V2015_04), frozenset()),
    Version("2015-10-15", frozenset(V2015_10), frozenset()),
    Version("2016-04-08", frozenset(V2016_04), frozenset()),
    Version("2016-10-14", frozenset(V2016_10), frozenset(COND_2016), ("newton",)),
    Version("2017-02-24", frozenset(V2017_02), frozenset(COND_2017_02), ("ocata",)),
    Version("2017-09-01", frozenset(V2017_09), frozenset(COND_2017_09), ("pike",)),
    Version("2018-03-02", frozenset(V2017_09), frozenset(COND_2017_09), ("queens",)),
    Version("2018-08-31", frozenset(V2017_09), frozenset(COND_2017_09), ("rocky",)),
    Version("2021-04-16", frozenset(V2017_09), frozenset(COND_2021), ("wallaby",)),
)}

#: Every function name any version knows (the condition-only ones included).
ALL_FUNCTIONS = frozenset().union(*(v.functions | v.condition_functions for v in VERSIONS.values()))

_ALIASES = {alias: v for v in VERSIONS.values() for alias in v.aliases}


def detect(template: object) -> Version:
    """The Version of a parsed template; HeatError naming heat_template_version otherwise."""
    if not isinstance(template, dict):
        raise HeatError("", "the template must be a YAML or JSON map")
    if "heat_template_version" not in template:
        if "AWSTemplateFormatVersion" in template or "HeatTemplateFormatVersion" in template:
            raise HeatError("AWSTemplateFormatVersion", "CloudFormation-format templates are not supported; use HOT")
        raise HeatError("heat_template_version", "missing: a HOT template starts with heat_template_version "
                        "(2013-05-23 to 2021-04-16)")
    raw = template["heat_template_version"]
    key = raw.isoformat() if isinstance(raw, (datetime.date, datetime.datetime)) else str(raw)
    version = VERSIONS.get(key) or _ALIASES.get(key)
    if version is None:
        raise HeatError("heat_template_version", f"unknown version {key!r}; known: " + ", ".join(VERSIONS)
                        + " (or " + ", ".join(_ALIASES) + ")")
    return version
