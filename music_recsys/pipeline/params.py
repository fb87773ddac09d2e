"""The param machinery behind ``RunConfig``: a field that is also a DAG param, its JSON schema check
(jsonschema, as Airflow's trigger form does), and the schema in words for the generated params table.

``music_recsys.pipeline.config`` declares the params with these helpers; this module knows nothing of
which params exist.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from music_recsys.errors import InputError

SECTIONS = ("Data", "Grid", "Search", "Evaluation", "Data checks", "Fast search", "Publishing", "Execution")

# The path params: resolved and confined to the allowed roots instead of being put in canonical form.
PATH_PARAMS = ("train_path", "validation_path", "test_path")


class ParamError(InputError):
    """A param value the run cannot use: retrying with the same params cannot help."""


# The dialect of every param's schema. Airflow checks a param's schema against its dialect's metaschema each
# time it resolves the value: for every task and param, each time the DAG is serialized. Draft 2020-12's
# metaschema (jsonschema's default, with dynamic references) is far slower to check against than draft-07's
# (measured: docs/development.md), and every keyword the params use means the same in both.
SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"


def param(default: Any, description: str, section: str, **schema: Any) -> Any:
    """A RunConfig field that is also a DAG param: default, JSON schema, description, form section."""
    if section not in SECTIONS:
        raise ValueError(f"unknown param section {section!r}; choose from {list(SECTIONS)}")
    metadata = {"schema": {"$schema": SCHEMA_DIALECT, **schema}, "description": description, "section": section}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def grid(default: list, description: str, items: dict, section: str = "Grid") -> Any:
    """A grid axis: a non-empty list of distinct values, each checked against ``items``."""
    return param(default, description, section, type="array", items=items, minItems=1, uniqueItems=True)


def path_param(default: str, description: str) -> Any:
    """An input path (one of ``PATH_PARAMS``), relative to the data root or under an allowed root."""
    return param(default, description, "Data", type="string", minLength=1)


@dataclass(frozen=True)
class ParamSpec:
    """One param as the DAG, the validation and the docs see it."""

    name: str
    default: Any
    schema: dict[str, Any]
    description: str
    section: str

    @property
    def is_path(self) -> bool:
        return self.name in PATH_PARAMS


def check_param(spec: ParamSpec, value: Any) -> None:
    """The trigger form's verdict on one value: the same JSON schema through the same validator."""
    import jsonschema

    validator = jsonschema.validators.validator_for(spec.schema)(spec.schema)  # as Param.resolve picks it
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "".join(f"[{p}]" for p in error.absolute_path)
        message = f"{error.instance!r} is not allowed" if error.validator == "not" else error.message
        raise ParamError(f"{spec.name}{where}: {message}. {spec.description}")


def canonical(schema: dict[str, Any], value: Any) -> Any:
    """Valid values in one form: JSON's 10.0 is an integer, grid lists are sorted."""
    if schema.get("type") == "array":
        return sorted(canonical(schema["items"], v) for v in value)
    if schema.get("type") == "integer":
        return int(value)
    if schema.get("type") == "number":
        return float(value)
    return value


def describe_schema(schema: dict[str, Any]) -> str:
    """The allowed values of a schema in words, for the params table."""
    if schema.get("type") == "array":
        return f"list of {describe_schema(schema['items'])}" + (", no repeats" if schema.get("uniqueItems") else "")
    if "enum" in schema:
        return " / ".join(f"`{v}`" for v in schema["enum"])
    kind = {"integer": "integer", "number": "number", "boolean": "true / false", "string": "text"}[schema["type"]]
    if schema.get("minLength"):
        kind = "non-empty text"
    if "exclusiveMinimum" in schema:
        low = f"> {schema['exclusiveMinimum']:g}"
    else:
        low = f">= {schema['minimum']:g}" if "minimum" in schema else ""
    high = f"<= {schema['maximum']:g}" if "maximum" in schema else ""
    bounds = ", ".join(b for b in (low, high) if b)
    excluded = f", not {schema['not']['const']}" if "not" in schema else ""
    return f"{kind} {bounds}{excluded}".strip()


# What a path param may say about the run's dates. Filled by ``fill_date_placeholders`` without any
# template engine, from the run's dates alone: a param never reaches Airflow's connections, variables or
# anything else a task's context holds (a conf of `{{ conn.x.password }}` is refused, not rendered).
DATE_PLACEHOLDERS = {
    "ds": lambda d: d.strftime("%Y-%m-%d"),
    "ds_nodash": lambda d: d.strftime("%Y%m%d"),
    "ts": lambda d: d.isoformat(),
    "ts_nodash": lambda d: d.strftime("%Y%m%dT%H%M%S"),
}
# Dates a placeholder can format with a filter: `{{ data_interval_end | ds }}`.
DATE_FIELDS = ("logical_date", "data_interval_start", "data_interval_end")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]+)\s*(?:\|\s*([A-Za-z_]+)\s*)?\}\}")
_TEMPLATE_MARKS = ("{{", "}}", "{%", "%}", "{#", "#}")


def allowed_placeholders() -> list[str]:
    """Every placeholder a path param may hold, as a user writes it."""
    plain = [f"{{{{ {name} }}}}" for name in DATE_PLACEHOLDERS]
    filtered = [f"{{{{ {field} | {name} }}}}" for field in DATE_FIELDS[1:] for name in ("ds", "ds_nodash")]
    return plain + filtered


def fill_date_placeholders(name: str, text: str, dates: dict[str, datetime]) -> str:
    """``text`` with its date placeholders filled from ``dates`` (``logical_date``, ``data_interval_start``,
    ``data_interval_end``); anything else that looks like a template is refused with a ``ParamError`` that
    does not repeat it (it is never rendered, so there is nothing it could have revealed)."""

    def fill(match: re.Match) -> str:
        field_name, fmt = match.group(1), match.group(2)
        if fmt is None and field_name in DATE_PLACEHOLDERS:
            return DATE_PLACEHOLDERS[field_name](dates["logical_date"])
        if fmt in DATE_PLACEHOLDERS and field_name in DATE_FIELDS:
            return DATE_PLACEHOLDERS[fmt](dates.get(field_name) or dates["logical_date"])
        raise _refused(name)

    filled = _PLACEHOLDER.sub(fill, text)
    if any(mark in filled for mark in _TEMPLATE_MARKS):
        raise _refused(name)
    return filled


def _refused(name: str) -> ParamError:
    return ParamError(
        f"{name}: holds a template expression that is not one of the date placeholders a path may use "
        f"({', '.join(allowed_placeholders())}); paths are never rendered as templates"
    )
