"""Generic config validation: ``ConfigError`` (every problem at once), type checks by pydantic's strict mode against
dataclass schemas and annotated signatures. A leaf: it knows no vcap component."""
from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import re
import types
import typing
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from omegaconf import DictConfig, ListConfig

# numbers with a range, for schemas and constructor signatures: pydantic checks the bounds with the type, and the
# report names the key, its value and the range
PositiveInt = Annotated[int, Gt(0)]
NonNegativeInt = Annotated[int, Ge(0)]
PositiveFloat = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]
Fraction = Annotated[float, Ge(0), Le(1)]  # a share, 0 to 1
Probability = Annotated[float, Gt(0), Le(1)]  # e.g. top_p: above 0, at most 1
_BOUNDS = ((Gt, "gt", ">"), (Ge, "ge", ">="), (Lt, "lt", "<"), (Le, "le", "<="))


class ConfigError(ValueError):
    """One or more problems in a project config; the message lists all of them."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s){where}:\n{lines}")


def did_you_mean(name: str, valid) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        bounds = [f"{sign} {getattr(m, attr)}" for m in meta for cls, attr, sign in _BOUNDS if isinstance(m, cls)]
        return _type_name(base) + (" " + " and ".join(bounds) if bounds else "")
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    return getattr(tp, "__name__", str(tp))


@functools.lru_cache(maxsize=None)
def _adapter(tp):
    from pydantic import TypeAdapter

    return TypeAdapter(tp)


def _check_type(value: Any, tp) -> bool:
    """``value`` is a ``tp`` as pydantic's strict mode sees it (no coercion: "8" is no int, 1 no bool)."""
    from pydantic import PydanticSchemaGenerationError, ValidationError

    try:
        _adapter(tp).validate_python(value, strict=True)
    except ValidationError:
        return False
    except PydanticSchemaGenerationError:  # a type pydantic does not know (a class of the user's): not checked
        pass
    return True


def validate_section(run: dict, schema, prefix: str) -> list[str]:
    """Problems in a resolved section (``run``, a nested section of it, a dataset) against its dataclass, all
    of them."""
    problems = []
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema, include_extras=True)
    for key, value in run.items():
        if key not in fields and key in getattr(schema, "MOVED", {}):
            problems.append(f"{prefix}.{key}: moved to {prefix}.{schema.MOVED[key]} (value {value!r})")
        elif key not in fields:
            problems.append(f"{prefix}.{key}: unknown key (value {value!r}){did_you_mean(key, fields)}")
        elif dataclasses.is_dataclass(hints[key]):
            if isinstance(value, dict):
                problems.extend(validate_section(value, hints[key], f"{prefix}.{key}"))
            elif not isinstance(value, hints[key]):
                problems.append(f"{prefix}.{key}: got {value!r}, expected a mapping of {hints[key].__name__} keys")
        elif not _check_type(value, hints[key]):
            problems.append(f"{prefix}.{key}: got {value!r} ({type(value).__name__}), expected {_type_name(hints[key])}")
    for name, f in fields.items():
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in run:
            problems.append(f"{prefix}.{name}: required key is missing (expected {_type_name(hints[name])})")
    return problems


_ABS = re.compile(r"^(/|[A-Za-z]:\\)")


def absolute_paths(cfg: DictConfig | ListConfig, prefix: str = "") -> list[str]:
    """Keys whose literal (unresolved) value is an absolute path."""
    found = []
    items = cfg.items_ex(resolve=False) if isinstance(cfg, DictConfig) else enumerate(cfg)
    for key, value in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (DictConfig, ListConfig)):
            found.extend(absolute_paths(value, path))
        elif isinstance(value, str) and _ABS.match(value):
            found.append(f"{path}={value!r}")
    return found


def check_arguments(fn, values: dict, prefix: str, skip=()) -> list[str]:
    """Problems of ``values`` against ``fn``'s annotated keyword parameters (``Literal`` choices, numbers,
    strings, lists, mappings, unions of them, checked by pydantic): the same all-at-once report as the run
    section's."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # noqa: BLE001  (an annotation that does not evaluate: names are still checked)
        return []
    problems = []
    for key, value in values.items():
        if key in skip or key not in hints or key == "return":
            continue
        if not _check_type(value, hints[key]):
            problems.append(f"{prefix}.{key}: got {value!r}, expected {_type_name(hints[key])}")
    return problems


def signature_keys(fn) -> list[str]:
    """Names of the keyword parameters of ``fn`` (for validating a model section)."""
    params = inspect.signature(fn).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def signature_defaults(fn) -> dict:
    """Keyword defaults of ``fn`` that a YAML config can hold (for showing the effective config)."""
    out = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name != "self" and p.default is not p.empty:
            if p.default is None or isinstance(p.default, (bool, int, float, str, list, tuple, dict)):
                out[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return out
