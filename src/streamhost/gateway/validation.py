"""Validate SageMaker control-plane input against botocore's `sagemaker` service model.

The checks and messages follow AWS's server side: a value of the wrong JSON type is a
`SerializationException`; constraint violations (required, length, range, pattern, enum)
are collected into one `ValidationException` that reads
"2 validation errors detected: Value 'x' at 'endpointName' failed to satisfy constraint: …; …"
with member paths in lowerCamelCase (`productionVariants.1.member.instanceType`).
Unknown members are dropped, as AWS's JSON deserializer ignores them.

Whatever JSON comes in, the only exception that leaves this module is `AwsError`.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import warnings
from datetime import datetime, timezone
from typing import Any

import botocore.session
from botocore.model import ServiceModel, Shape

from .errors import serialization_error, unknown_operation, validation_error

__all__ = [
    "java_pattern",
    "sagemaker_model",
    "validate_input",
    "validate_shape",
]

# Only recursive shapes can nest deeper than the model itself; this bounds them (and the
# Python stack) whatever a client sends.
_MAX_DEPTH = 40
# Long values are echoed in messages only up to here, so an error body stays small.
_MAX_SHOWN = 1024
# Errors listed in one message; the count still covers all of them.
_MAX_LISTED = 100
_INT_RANGE = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_TYPE_NAMES = {"integer": "an Integer", "long": "a Long", "float": "a Float", "double": "a Double"}


@functools.lru_cache(maxsize=1)
def sagemaker_model() -> ServiceModel:
    """botocore's `sagemaker` service model (loaded once)."""
    return botocore.session.get_session().get_service_model("sagemaker")


def validate_input(operation: str, params: Any, model: ServiceModel | None = None) -> dict:
    """Check `params` against `operation`'s input shape; return a normalized copy.

    The copy has unknown members and nulls removed and timestamps as epoch-second floats.
    """
    model = model or sagemaker_model()
    if operation not in _operation_names(model):
        raise unknown_operation(operation)
    op = model.operation_model(operation)
    if op.input_shape is None:
        if not isinstance(params, dict):
            raise _not_convertible(params, "a Structure")
        return {}
    return validate_shape(op.input_shape, params)


@functools.lru_cache(maxsize=4)
def _operation_names(model: ServiceModel) -> frozenset[str]:
    return frozenset(model.operation_names)


def validate_shape(shape: Shape, value: Any) -> Any:
    """Check `value` against any shape (input or output); return the normalized value."""
    checker = _Checker()
    result = checker.check(shape, value, "", 0)
    if checker.count:
        count = checker.count
        noun = "validation error" if count == 1 else "validation errors"
        raise validation_error(f"{count} {noun} detected: " + "; ".join(checker.errors))
    return result


class _Checker:
    """Walks a value alongside its shape, normalizing it and collecting constraint errors."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.count = 0

    def fail(self, value: Any, path: str, constraint: str) -> None:
        self.count += 1
        if len(self.errors) < _MAX_LISTED:
            self.errors.append(
                f"Value {_show(value)} at '{path}' failed to satisfy constraint: {constraint}"
            )

    def check(self, shape: Shape, value: Any, path: str, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise serialization_error("Input is nested too deeply.")
        kind = shape.type_name
        if kind == "structure":
            return self.structure(shape, value, path, depth)
        if kind == "list":
            return self.list(shape, value, path, depth)
        if kind == "map":
            return self.map(shape, value, path, depth)
        if kind == "string":
            if not isinstance(value, str):
                raise _not_convertible(value, "a String")
            self.string_constraints(shape, value, path)
            return value
        if kind in ("integer", "long"):
            return self.integer(shape, value, path)
        if kind in ("float", "double"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _not_convertible(value, _TYPE_NAMES[kind])
            self.range_constraints(shape, value, path)
            return float(value)
        if kind == "boolean":
            if not isinstance(value, bool):
                raise _not_convertible(value, "a Boolean")
            return value
        if kind == "timestamp":
            return _timestamp(value)
        if kind == "blob" and not isinstance(value, str):
            raise _not_convertible(value, "a Blob")
        return value  # blob (base64 text) and document: taken as sent

    def structure(self, shape: Shape, value: Any, path: str, depth: int) -> dict:
        if not isinstance(value, dict):
            raise _not_convertible(value, "a Structure")
        result = {}
        required = shape.metadata.get("required", ())
        for name, member in shape.members.items():
            item = value.get(name)
            if item is None and name not in required:
                continue
            child = f"{path}.{_camel(name)}" if path else _camel(name)
            if item is None:
                self.fail(None, child, "Member must not be null")
            else:
                result[name] = self.check(member, item, child, depth + 1)
        return result

    def list(self, shape: Shape, value: Any, path: str, depth: int) -> list:
        if not isinstance(value, list):
            raise _not_convertible(value, "a List")
        self.size_constraints(shape, value, path)
        result = []
        for index, item in enumerate(itertools.islice(value, _checked(shape)), start=1):
            child = f"{path}.{index}.member"
            if item is None:
                self.fail(None, child, "Member must not be null")
                continue
            result.append(self.check(shape.member, item, child, depth + 1))
        return result

    def map(self, shape: Shape, value: Any, path: str, depth: int) -> dict:
        if not isinstance(value, dict):
            raise _not_convertible(value, "a Map")
        self.size_constraints(shape, value, path)
        key_problems: list[str] = []
        value_problems: list[str] = []
        result = {}
        for key, item in itertools.islice(value.items(), _checked(shape)):
            key_problems.extend(_string_problems(shape.key, key))
            if item is None:
                value_problems.append("Member must not be null")
                continue
            if shape.value.type_name == "string":
                if not isinstance(item, str):
                    raise _not_convertible(item, "a String")
                value_problems.extend(_string_problems(shape.value, item))
                result[key] = item
            else:
                result[key] = self.check(shape.value, item, f"{path}.{key}", depth + 1)
        # AWS reports a map's key and value failures once each, on the whole map.
        if key_problems:
            self.fail(value, path, f"Map keys must satisfy constraint: [{_unique(key_problems)}]")
        if value_problems:
            self.fail(
                value, path, f"Map value must satisfy constraint: [{_unique(value_problems)}]"
            )
        return result

    def integer(self, shape: Shape, value: Any, path: str) -> int:
        kind = shape.type_name
        low, high = _INT_RANGE[kind]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _not_convertible(value, _TYPE_NAMES[kind])
        if isinstance(value, float):
            if not value.is_integer():
                raise _not_convertible(value, _TYPE_NAMES[kind])
            value = int(value)
        if not low <= value <= high:
            raise _not_convertible(value, _TYPE_NAMES[kind])
        self.range_constraints(shape, value, path)
        return value

    def range_constraints(self, shape: Shape, value: float, path: str) -> None:
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None and value < low:
            self.fail(value, path, f"Member must have value greater than or equal to {low}")
        if high is not None and value > high:
            self.fail(value, path, f"Member must have value less than or equal to {high}")

    def size_constraints(self, shape: Shape, value: list | dict, path: str) -> None:
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if low is not None and len(value) < low:
            self.fail(value, path, f"Member must have length greater than or equal to {low}")
        if high is not None and len(value) > high:
            self.fail(value, path, f"Member must have length less than or equal to {high}")

    def string_constraints(self, shape: Shape, value: str, path: str) -> None:
        for problem in _string_problems(shape, value):
            self.fail(value, path, problem)


def _checked(shape: Shape) -> int | None:
    """How many items of a list or map to check: past its maximum size the request is
    rejected anyway, and walking a huge one would only hold up the event loop."""
    high = shape.metadata.get("max")
    return None if high is None else high + 1


def _string_problems(shape: Shape, value: str) -> list[str]:
    """The constraint texts a string fails, in AWS's wording."""
    problems = []
    meta = shape.metadata
    low, high = meta.get("min"), meta.get("max")
    if low is not None and len(value) < low:
        problems.append(f"Member must have length greater than or equal to {low}")
    if high is not None and len(value) > high:
        problems.append(f"Member must have length less than or equal to {high}")
    pattern = meta.get("pattern")
    if pattern is not None and not _local_model_data(shape, value):
        compiled = java_pattern(pattern)
        if compiled is not None and compiled.fullmatch(value) is None:
            shown = pattern if pattern.startswith("^") else "^" + pattern
            problems.append(f"Member must satisfy regular expression pattern: {shown}")
    enum = meta.get("enum")
    if enum:
        allowed, text = _enum_rule(tuple(enum))
        if value not in allowed:
            problems.append(text)
    return problems


# Model-data locations (`ModelDataUrl`, `S3DataSource.S3Uri`): SageMaker takes s3:// and
# https:// only; a self-hosted gateway also takes files on its own machine.
_MODEL_DATA_SHAPES = frozenset({"Url", "S3ModelUri"})


def _local_model_data(shape: Shape, value: str) -> bool:
    return shape.name in _MODEL_DATA_SHAPES and value.startswith(("file://", "/"))


@functools.lru_cache(maxsize=256)
def _enum_rule(enum: tuple[str, ...]) -> tuple[frozenset[str], str]:
    # Some enums are long (271 instance types): test membership in a set, word it once.
    return frozenset(enum), f"Member must satisfy enum value set: [{', '.join(enum)}]"


# Java property classes as character-class bodies. The Unicode ones are deliberately
# wider than Java's (\w also matches digits and "_"): a pattern we approximate must only
# ever accept more than AWS would, never reject a value AWS accepts.
_PROPERTY_CLASSES = {
    "L": r"\w",
    "IsL": r"\w",
    "IsLetter": r"\w",
    "IsAlphabetic": r"\w",
    "N": r"\w",
    "Nd": r"\d",
    "IsDigit": r"\d",
    "Z": r"\s",
    "Zs": r"\s",
    "IsWhite_Space": r"\s",
    "M": r"\W",
    "P": r"\W_",
    "S": r"\W",
    "Alnum": "a-zA-Z0-9",
    "Alpha": "a-zA-Z",
    "Digit": "0-9",
    "Upper": "A-Z",
    "Lower": "a-z",
    "XDigit": "0-9a-fA-F",
    "Space": r" \t\n\x0b\f\r",
    "Punct": r"!-/:-@\[-`{-~",
    "Graph": r"!-~",
    "Print": r" -~",
    "ASCII": r"\x00-\x7f",
}
_SURROGATE_PAIR = re.compile(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def java_pattern(pattern: str) -> re.Pattern[str] | None:
    """Compile a Java regex (as botocore's models carry them) for Python's `re`.

    Returns None where a construct has no faithful translation: the caller then skips the
    check (fails open) rather than rejecting valid input or crashing.
    """
    translated = _translate(_SURROGATE_PAIR.sub(_join_surrogates, pattern))
    if translated is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "possible nested set" FutureWarnings
            return re.compile(translated)
    except (re.error, ValueError, OverflowError, RecursionError):
        return None


def _join_surrogates(match: re.Match[str]) -> str:
    # Java writes astral ranges as UTF-16 pairs; Python's `re` works on code points.
    high, low = int(match[1], 16), int(match[2], 16)
    return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08x}"


def _translate(pattern: str) -> str | None:
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 >= len(pattern):
                return None
            escape = pattern[i + 1]
            if escape in "pP":
                end, name = _property_name(pattern, i + 2)
                body = _PROPERTY_CLASSES.get(name)
                if escape == "P" or body is None:
                    return None
                out.append(body if in_class else f"[{body}]")
                i = end
                continue
            if escape == "Q":
                end = pattern.find("\\E", i + 2)
                literal = pattern[i + 2 :] if end < 0 else pattern[i + 2 : end]
                out.append(re.escape(literal))
                i = len(pattern) if end < 0 else end + 2
                continue
            if escape == "x" and pattern.startswith("{", i + 2):
                end = pattern.find("}", i + 3)
                try:
                    out.append(f"\\U{int(pattern[i + 3 : end], 16):08x}")
                except ValueError:
                    return None
                i = end + 1
                continue
            if escape == "z":
                out.append(r"\Z")
            elif escape == "Z":
                out.append(r"(?=\n?\Z)")
            elif escape in "hHvVRXGkK":
                return None  # Java-only classes and anchors
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if char == "[":
            if in_class:
                return None  # Java's nested class union has no `re` equivalent
            in_class = True
            out.append(char)
            i += 1
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            continue
        if char == "$" and not in_class and pattern.startswith("{", i + 1):
            # Java accepts a quantified anchor (`$` `{1,128}`); it means just `$`.
            end = pattern.find("}", i + 1)
            if end > 0 and re.fullmatch(r"\{\d+(,\d*)?\}", pattern[i + 1 : end + 1]):
                out.append("$")
                i = end + 1
                continue
        if char == "]" and in_class:
            in_class = False
        elif char == "&" and in_class and pattern.startswith("&&", i):
            return None  # class intersection
        out.append(char)
        i += 1
    return None if in_class else "".join(out)


def _property_name(pattern: str, start: int) -> tuple[int, str]:
    if pattern.startswith("{", start):
        end = pattern.find("}", start)
        if end < 0:
            return len(pattern), ""
        return end + 1, pattern[start + 1 : end]
    return start + 1, pattern[start : start + 1]


def _timestamp(value: Any) -> float:
    if isinstance(value, bool):
        raise _not_convertible(value, "a Timestamp")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise serialization_error(
                f"STRING_VALUE can not be converted to a Timestamp: {_clip(value)!r}"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        try:
            return moment.timestamp()
        except (OverflowError, ValueError, OSError):
            raise serialization_error("Timestamp out of range.") from None
    raise _not_convertible(value, "a Timestamp")


def _token(value: Any) -> str:
    """The JSON token name AWS's deserializer reports for a value of the wrong type."""
    if value is True:
        return "TRUE_VALUE"
    if value is False:
        return "FALSE_VALUE"
    if isinstance(value, str):
        return "STRING_VALUE"
    if isinstance(value, (int, float)):
        return "NUMBER_VALUE"
    if isinstance(value, list):
        return "START_ARRAY"
    if isinstance(value, dict):
        return "START_OBJECT"
    return "VALUE_NULL"


def _unexpected(value: Any, expected: str) -> str:
    if isinstance(value, list):
        return "Start of list found where not expected"
    if isinstance(value, dict):
        return "Start of structure or map found where not expected."
    return f"{_token(value)} can not be converted to {expected}"


def _not_convertible(value: Any, expected: str) -> Exception:
    return serialization_error(_unexpected(value, expected))


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _unique(items: list[str]) -> str:
    return ", ".join(dict.fromkeys(items))


def _show(value: Any) -> str:
    """A value as AWS's messages print it (Java's toString), in quotes; `null` bare."""
    if value is None:
        return "null"
    return f"'{_clip(_java_string(value))}'"


def _java_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return f"{value:.1f}"
    if isinstance(value, list):
        return "[" + ", ".join(_java_string(item) for item in value[:100]) + "]"
    if isinstance(value, dict):
        items = itertools.islice(value.items(), 100)
        return "{" + ", ".join(f"{k}={_java_string(v)}" for k, v in items) + "}"
    return str(value)


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."
