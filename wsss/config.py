"""Config validation against the JSON schema, filling in defaults, with one-line errors naming the key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from wsss.errors import InputError


def _with_defaults(validator_class: type) -> type:
    """Extend a jsonschema validator so that ``default`` values are inserted for missing properties."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _strip_defaults(node: Any) -> Any:
    """A copy of a schema without ``default`` keywords (for per-run overrides, which must stay sparse)."""
    if isinstance(node, dict):
        return {k: _strip_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_strip_defaults(v) for v in node]
    return node


def _inline_refs(node: Any, root: dict[str, Any]) -> Any:
    """Replace local ``{"$ref": "#/definitions/x"}`` nodes by their targets (the schema has no cycles), and
    ``{"$override": "x"}`` by definition ``x`` without defaults."""
    if isinstance(node, dict):
        if set(node) == {"$override"}:
            return _strip_defaults(_inline_refs(root["definitions"][node["$override"]], root))
        if set(node) == {"$ref"} and node["$ref"].startswith("#/"):
            target: Any = root
            for part in node["$ref"][2:].split("/"):
                target = target[part]
            return _inline_refs(target, root)
        return {k: _inline_refs(v, root) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, root) for v in node]
    return node


def load_schema(path: str | Path) -> dict[str, Any]:
    """Read a YAML JSON-schema file, with local ``$ref`` inlined so that defaults below them apply."""
    with open(path) as fh:
        schema = yaml.safe_load(fh)
    return _inline_refs(schema, schema)


def validate_config(config: dict[str, Any], schema: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Return a validated copy of ``config`` with defaults filled in; the first error raises InputError.

    The error reads ``<source>: <dotted.key>: <problem>``, e.g. ``config.yaml: datasets.synth.seed: 'x' is not of
    type 'integer'``.
    """
    config = copy.deepcopy(config)
    validator_class = _with_defaults(jsonschema.validators.validator_for(schema))
    validator = validator_class(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise InputError(source, f"{key}: {err.message}")
    return config


STAGE_SECTIONS = ("cls", "cam", "irn", "seg")


def run_config(config: dict[str, Any], run: str) -> dict[str, Any]:
    """The effective settings of one run: its dataset and method, and every stage section with its overrides.

    ``config`` must be validated (defaults filled). Overrides replace values key by key (lists whole).
    """
    try:
        entry = config["runs"][run]
    except KeyError:
        raise InputError("config", f"runs.{run}: no such run (known: {sorted(config['runs'])})") from None
    merged = {"run": run, "dataset": entry["dataset"], "method": entry["method"]}
    for section in STAGE_SECTIONS:
        merged[section] = {**config[section], **entry.get(section, {})}
    return merged
