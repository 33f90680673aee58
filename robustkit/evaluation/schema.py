"""The versioned JSON schema of ``report.json`` and a validator for it.

:data:`REPORT_SCHEMA` is standard JSON Schema (draft 2020-12), so other tools can validate
reports too. :func:`validate_report` checks a document against it with a small built-in
validator (the keywords the schema uses) and then checks that the sizes agree with each other.
Changing the layout means bumping :data:`SCHEMA_VERSION`. The schema owns its name, version and
enumerations; :mod:`robustkit.evaluation.report` imports them from here (never the reverse).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustkit.errors import InputError

SCHEMA_NAME = "robustkit.robustness-report"
SCHEMA_VERSION = 2
VERDICTS = ("pass", "warn", "fail", "not run")
MODES = ("cascade", "independent")

_COUNT = {"type": "integer", "minimum": 0}
_SHARE = {"type": "number", "minimum": 0, "maximum": 1}
_SECONDS = {"type": "number", "minimum": 0}
_TEXT = {"type": "string"}


def _object(properties: dict[str, Any], extra: bool = False) -> dict[str, Any]:
    """An object schema requiring exactly these properties (plus others when ``extra``)."""
    return {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": extra,
    }


def _array(items: dict[str, Any], depth: int = 1) -> dict[str, Any]:
    """An array (nested ``depth`` times) of ``items``."""
    schema = items
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


_EXAMPLES = _object(
    {
        "labels": _array(_COUNT),
        "clean_pred": _array(_COUNT),
        "robust": _array({"type": "boolean"}, 2),
        "broken_by": _array({"type": "integer", "minimum": -3}, 2),
        "adversarial_pred": _array(_COUNT, 2),
        "adversarial_margin": _array({"type": "number"}, 2),
        "linf": _array({"type": "number", "minimum": 0}, 2),
        "l2": _array({"type": "number", "minimum": 0}, 2),
        "evaluations": _array(_COUNT, 2),
        "attacked": _array({"type": "boolean"}, 3),
        "broken": _array({"type": "boolean"}, 3),
    }
)

REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": f"{SCHEMA_NAME}/{SCHEMA_VERSION}",
    "title": "robustkit robustness report",
    **_object(
        {
            "schema": {"const": SCHEMA_NAME},
            "schema_version": {"const": SCHEMA_VERSION},
            "norm": {"enum": ["linf", "l2"]},
            "bounds": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
            "epsilons": {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1},
            "suite": _TEXT,
            "attacks": {
                "type": "array",
                "minItems": 1,
                "items": _object(
                    {
                        "name": _TEXT,
                        "attack": _TEXT,
                        "gradient_free": {"type": "boolean"},
                        "top_k_targets": _COUNT,
                        "options": {"type": "object"},
                        "configs": _array({"type": "object"}),
                        "full_budget_per_example": _COUNT,
                    }
                ),
            },
            "mode": {"enum": list(MODES)},
            "seed": {"type": "integer"},
            "num_examples": _COUNT,
            "num_classes": _COUNT,
            "logits_source": _TEXT,
            "clean_accuracy": _SHARE,
            "robust_accuracy": _array(_SHARE),
            "robust_accuracy_before_checks": _array(_SHARE),
            "outcomes": _array(
                _object(
                    {
                        "attack": _TEXT,
                        "eps": {"type": "number", "minimum": 0},
                        "attacked": _COUNT,
                        "broken": _COUNT,
                        "robust_accuracy": _SHARE,
                        "gradient_evaluations": _COUNT,
                        "forward_evaluations": _COUNT,
                        "full_budget_gradient_evaluations": _COUNT,
                        "full_budget_forward_evaluations": _COUNT,
                        "wall_time_s": _SECONDS,
                    }
                )
            ),
            "verification": _object(
                {
                    "rechecked": _COUNT,
                    "outside_ball": _COUNT,
                    "disagreements": _COUNT,
                    "broken_by_checks": _COUNT,
                }
            ),
            "checks": _array(
                _object(
                    {
                        "number": {"type": "integer", "minimum": 1},
                        "name": _TEXT,
                        "verdict": {"enum": list(VERDICTS)},
                        "explanation": _TEXT,
                        "subsample": {"type": ["integer", "null"], "minimum": 0},
                        "details": {"type": "object"},
                    }
                )
            ),
            "cost": _object(
                {
                    "gradient_evaluations": _COUNT,
                    "forward_evaluations": _COUNT,
                    "full_budget_gradient_evaluations": _COUNT,
                    "full_budget_forward_evaluations": _COUNT,
                    "share_of_full_budget": {"type": ["number", "null"], "minimum": 0},
                }
            ),
            "timing": _object(
                {"total": _SECONDS, "clean": _SECONDS, "attacks": _SECONDS, "checks": _SECONDS}
            ),
            "settings": _object(
                {"batch_size": _COUNT, "check_samples": _COUNT, "checks": _array(_TEXT)}
            ),
            "environment": {"type": "object"},
            "examples": {"anyOf": [{"type": "null"}, _EXAMPLES]},
        }
    ),
}

_TYPES: dict[str, Any] = {
    "object": Mapping,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number"):
        if isinstance(value, bool):
            return False
        return isinstance(value, int) if name == "integer" else isinstance(value, (int, float))
    return isinstance(value, _TYPES[name])


def _errors(value: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    """Violations of ``schema`` by ``value`` (the keywords REPORT_SCHEMA uses)."""
    if "anyOf" in schema:
        branches = [_errors(value, option, path) for option in schema["anyOf"]]
        return [] if any(not b for b in branches) else min(branches, key=len)
    if "const" in schema and value != schema["const"]:
        return [f"{path}: expected {schema['const']!r}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of {schema['enum']}"]
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, name) for name in names):
            return [f"{path}: expected {' or '.join(names)}, got {type(value).__name__}"]
    problems: list[str] = []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{path}: {value} is below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{path}: {value} is above {schema['maximum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            problems.append(f"{path}: needs at least {schema['minItems']} items")
        if len(value) > schema.get("maxItems", len(value)):
            problems.append(f"{path}: allows at most {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                problems += _errors(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, Mapping):
        properties = schema.get("properties", {})
        problems += [
            f"{path}: missing {key!r}" for key in schema.get("required", ()) if key not in value
        ]
        for key, item in value.items():
            if key in properties:
                problems += _errors(item, properties[key], f"{path}.{key}")
            elif schema.get("additionalProperties", True) is False:
                problems.append(f"{path}: unexpected {key!r}")
    return problems


def _size_errors(document: Mapping[str, Any]) -> list[str]:
    """Disagreements between the sizes of the report's parts."""
    n_eps, n_attacks = len(document["epsilons"]), len(document["attacks"])
    problems = []
    if len(document["robust_accuracy"]) != n_eps:
        problems.append("robust_accuracy needs one value per eps")
    if len(document["outcomes"]) != n_eps * n_attacks:
        problems.append("outcomes needs one entry per attack and eps")
    examples = document["examples"]
    if examples is not None:
        n = document["num_examples"]
        shapes = {
            "labels": (n,),
            "robust": (n_eps, n),
            "attacked": (n_attacks, n_eps, n),
        }
        for name, shape in shapes.items():
            values: Any = examples[name]
            for size in shape:
                if len(values) != size:
                    problems.append(f"examples.{name} must have shape {shape}")
                    break
                values = values[0] if size else []
    return problems


def validate_report(document: Any) -> None:
    """Raise InputError listing what in ``document`` does not follow the report schema."""
    problems = _errors(document, REPORT_SCHEMA, "report")
    if not problems:
        problems = _size_errors(document)
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise InputError(f"Not a valid robustkit robustness report: {shown}{more}.")
