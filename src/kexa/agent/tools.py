"""Tools as typed Python functions: JSON schema from the signature and docstring, and a ToolBox that
calls them safely.

    def get_order(db: sqlite3.Connection, order_id: str) -> dict:
        '''Look up one order.

        Args:
            order_id: the order's id, e.g. "A-1042"
        '''
    box = ToolBox(timeout_s=10)
    box.add(get_order, bind={"db": conn})      # bound parameters are not part of the schema
    box.schemas()                               # OpenAI tool declarations for the chat template
    box.call("get_order", '{"order_id": "A-1042"}')   # -> ToolResult(content, error)

Schema rules: str/int/float/bool -> string/integer/number/boolean, list[X] -> array, dict -> object,
Literal[...] -> enum, `X | None` -> anyOf with null; a parameter without a default is required. The
description is the docstring up to `Args:`; each `name: text` line under `Args:` describes a parameter.

Calls never raise: unknown tool, arguments that are not JSON or break the schema (checked with
`jsonschema`), an exception inside the tool and a timeout all come back as an error result whose text
tells the model what went wrong, so it can correct itself. A timeout cannot stop a Python thread: the
call is abandoned (its thread is a daemon) and the model is told; tools that run untrusted or heavy work
(`python`) enforce their own hard limit in a separate process (`kexa.sandbox`).
"""

from __future__ import annotations

import inspect
import json
import threading
import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Literal

import jsonschema

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def json_type(hint) -> dict:
    """The JSON schema of one Python type annotation."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    if hint in (dict, Any) or origin is dict:
        return {"type": "object"}
    if hint is list or origin is list:
        return {"type": "array", "items": json_type(args[0])} if args else {"type": "array"}
    if origin is Literal:
        kinds = {_SCALARS[type(a)] for a in args}
        return {"type": kinds.pop(), "enum": list(args)} if len(kinds) == 1 else {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        schemas = [json_type(a) for a in inner] + ([{"type": "null"}] if len(inner) < len(args) else [])
        return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    raise TypeError(f"no JSON schema for the type {hint!r}")


def _split_doc(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {parameter: text}) from a Google-style docstring."""
    head, params, current = [], {}, None
    in_args, indent = False, None  # a parameter line sits at the first parameter's indentation
    for line in doc.splitlines():
        s = line.strip()
        if s in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if s in ("Returns:", "Raises:", "Example:", "Examples:"):
            in_args, current = False, None
            continue
        if in_args:
            depth = len(line) - len(line.lstrip())
            name, sep, text = s.partition(":")
            if sep and name.isidentifier() and depth > 0 and depth == (indent or depth):
                indent, current = depth, name
                params[name] = text.strip()
            elif current and s:
                params[current] += " " + s
        elif current is None:
            head.append(s)
    return " ".join(" ".join(head).split()), params


def function_schema(fn: Callable, name: str | None = None, skip: tuple[str, ...] = ()) -> dict:
    """OpenAI tool declaration of a typed function; `skip`: parameters bound by the runtime."""
    hints = typing.get_type_hints(fn)
    description, docs = _split_doc(inspect.getdoc(fn) or "")
    props, required = {}, []
    for p in inspect.signature(fn).parameters.values():
        if p.name in skip:
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"{fn.__name__}: *args/**kwargs cannot be described to a model")
        if p.name not in hints:
            raise TypeError(f"{fn.__name__}: parameter {p.name!r} has no type annotation")
        schema = json_type(hints[p.name])
        if docs.get(p.name):
            schema["description"] = docs[p.name]
        if p.default is p.empty:
            required.append(p.name)
        elif p.default is not None:
            schema["default"] = p.default
        props[p.name] = schema
    if not description:
        raise TypeError(f"{fn.__name__}: a tool needs a docstring (the model reads it to choose the tool)")
    return {"type": "function", "function": {
        "name": name or fn.__name__, "description": description,
        "parameters": {"type": "object", "properties": props, "required": required, "additionalProperties": False}}}


@dataclass
class ToolOutput:
    """What a tool may return instead of plain data: the text the model sees and, when that is a
    digest (a summarised page), the raw text for the log."""
    text: str
    raw: str | None = None


@dataclass
class ToolResult:
    content: str  # what goes back to the model
    error: bool = False
    raw: str | None = None  # the full output when the model saw a summary


@dataclass
class _Entry:
    fn: Callable
    schema: dict
    bind: dict
    timeout_s: float
    validator: jsonschema.Draft202012Validator


@lru_cache(maxsize=256)
def _validator(parameters_json: str) -> jsonschema.Draft202012Validator:
    """Checked once per distinct schema (checking a schema costs milliseconds; environments re-bind tools often)."""
    parameters = json.loads(parameters_json)
    jsonschema.Draft202012Validator.check_schema(parameters)
    return jsonschema.Draft202012Validator(parameters)


class ToolBox:
    def __init__(self, timeout_s: float = 10.0):
        self.timeout_s = timeout_s
        self.entries: dict[str, _Entry] = {}

    def add(self, fn: Callable, name: str | None = None, bind: dict | None = None,
            timeout_s: float | None = None) -> "ToolBox":
        bind = bind or {}
        schema = function_schema(fn, name, skip=tuple(bind))
        name = schema["function"]["name"]
        if name in self.entries:
            raise ValueError(f"tool {name!r} is declared twice")
        validator = _validator(json.dumps(schema["function"]["parameters"], sort_keys=True))
        self.entries[name] = _Entry(fn, schema, bind, timeout_s or self.timeout_s, validator)
        return self

    def schemas(self) -> list[dict]:
        return [e.schema for e in self.entries.values()]

    def call(self, name: str, arguments: str | dict) -> ToolResult:
        entry = self.entries.get(name)
        if entry is None:
            return ToolResult(f"error: unknown tool {name!r}; the tools are {sorted(self.entries)}", True)
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as e:
                return ToolResult(f"error: the arguments of {name} are not valid JSON ({e.msg} at "
                                  f"character {e.pos}); send one JSON object", True)
        try:
            entry.validator.validate(arguments)
        except jsonschema.ValidationError as e:
            where = "/".join(map(str, e.absolute_path)) or "arguments"
            return ToolResult(f"error: bad arguments for {name}: {where}: {e.message}", True)
        box: dict[str, Any] = {}

        def work():
            try:
                box["value"] = entry.fn(**entry.bind, **arguments)
            except Exception as e:  # noqa: BLE001 - any tool failure goes back to the model as text
                box["error"] = f"error: {name} failed: {type(e).__name__}: {e}"

        thread = threading.Thread(target=work, daemon=True, name=f"tool-{name}")
        thread.start()
        thread.join(entry.timeout_s)
        if thread.is_alive():
            return ToolResult(f"error: {name} did not finish within {entry.timeout_s:g} s", True)
        if "error" in box:
            return ToolResult(box["error"], True)
        value = box["value"]
        if isinstance(value, ToolOutput):
            return ToolResult(value.text, False, value.raw)
        return ToolResult(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str))
