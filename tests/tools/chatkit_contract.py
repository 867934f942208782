"""ChatKit contract validator: checks JSON values against the official ChatKit
server SDK's pydantic types (PyPI `openai-chatkit`, pinned in chatkit.txt).

A long-lived process. After start-up it prints one line,
`{"ready":true,"chatkit":"<version>"}`; then it reads one JSON request per
stdin line and answers one JSON line, `{"ok":true}` or
`{"ok":false,"error":"..."}`:

  {"kind":"event","value":{...}}                         a server-sent event (ThreadStreamEvent)
  {"kind":"answer","request":"threads.list","value":{...}} the JSON answer to a request type
  {"kind":"request","value":{...}}                       a request body (ChatKitReq)

Strict: after pydantic validation the value is dumped again the way the SDK's
server serializes it (`ChatKitServer._serialize`: by alias, without None
fields, attachment metadata excluded; requests: by alias) and compared with
the input, recursively. A failure is a field the SDK drops (an unknown field,
or a null the SDK would omit), a value that changes (a coercion such as
"1" -> 1 or 1 -> true), or a length that changes. Fields the SDK adds are
defaults it fills and are accepted. Timestamps compare as instants and URLs
after pydantic's normalization ("https://a.b" == "https://a.b/").

On top of the types, what the SDK's server guarantees in answers and events:
hidden items (`hidden_context_item`, `sdk_hidden_context`) are never sent and
a thread's `metadata` is always `{}`.

Widgets: the SDK types a widget as `StrictWidgetRoot | DynamicWidgetRoot`
(and children as `StrictWidgetComponent | DynamicWidgetComponent`); the
dynamic models allow any field, so the SDK itself accepts any tree. Here every
node is validated on its own against the component model its `type` names
(roots: Card, ListView, Basic; below them the StrictWidgetComponent models;
ListView children are ListViewItems): every prop must be one of that model's
fields with a value the model keeps unchanged, then its children recursively.
"""

from __future__ import annotations

import json
import sys
import typing
import warnings
from datetime import datetime
from importlib.metadata import version
from typing import Any

# The named widget classes are marked deprecated (for direct construction).
warnings.simplefilter("ignore", DeprecationWarning)

from pydantic import AnyUrl, BaseModel, TypeAdapter, ValidationError  # noqa: E402

from chatkit import types as t  # noqa: E402
from chatkit import widgets as w  # noqa: E402

EVENT = TypeAdapter(t.ThreadStreamEvent)
REQUEST = TypeAdapter(t.ChatKitReq)

# What ck-py's `ChatKitServer._process_non_streaming` returns per request type.
ANSWERS: dict[str, TypeAdapter[Any]] = {
    "threads.get_by_id": TypeAdapter(t.Thread),
    "threads.update": TypeAdapter(t.Thread),
    "threads.list": TypeAdapter(t.Page[t.Thread]),
    "items.list": TypeAdapter(t.Page[t.ThreadItem]),
    "threads.sync_custom_action": TypeAdapter(t.SyncCustomActionResponse),
    "attachments.create": TypeAdapter(t.Attachment),
    "input.transcribe": TypeAdapter(t.TranscriptionResult),
}
# ... or literally b"{}".
EMPTY_ANSWERS = {"threads.delete", "items.feedback", "attachments.delete"}
STREAMING = {m.model_fields["type"].default for m in typing.get_args(t.StreamingReq)}

# `_serialize` in chatkit/server.py, as a JSON value.
RESPONSE_DUMP = {
    "mode": "json",
    "by_alias": True,
    "exclude_none": True,
    "context": {"exclude_metadata": True},
}
REQUEST_DUMP = {"mode": "json", "by_alias": True}


def union_members(annotated: Any) -> list[type[BaseModel]]:
    """The models of `Annotated[A | B | ..., Field(discriminator=...)]`."""
    union = typing.get_args(annotated)[0]
    return list(typing.get_args(union))


def by_type(models: list[type[BaseModel]]) -> dict[str, type[BaseModel]]:
    return {m.model_fields["type"].default: m for m in models}


WIDGET_ROOTS = by_type(union_members(w.StrictWidgetRoot))
WIDGET_COMPONENTS = by_type(union_members(w.StrictWidgetComponent))
LIST_VIEW_ITEMS = {"ListViewItem": w.ListViewItem}

MAX_ERRORS = 20


class Failures:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: tuple[Any, ...], message: str) -> None:
        self.items.append(f"{show(path)}: {message}")


def show(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def describe(error: ValidationError, path: tuple[Any, ...], out: Failures) -> None:
    for e in error.errors(include_url=False):
        loc = path + tuple(e["loc"])
        detail = e["msg"]
        if e["type"] != "missing":
            detail += f" (got {short(e.get('input'))})"
        out.add(loc, detail)


# --- comparing the input with the SDK's own dump -----------------------------


def same_instant(sent: str, dumped: str) -> bool:
    """Two ISO-8601 date-times for the same instant (both with or both without an offset)."""
    if "T" not in sent:
        return False
    try:
        a = datetime.fromisoformat(sent)
        b = datetime.fromisoformat(dumped)
    except ValueError:
        return False
    if (a.tzinfo is None) != (b.tzinfo is None):
        return False
    return a == b


def same_url(sent: str, dumped: str) -> bool:
    try:
        return str(AnyUrl(sent)) == dumped
    except (ValidationError, ValueError, TypeError):
        return False


def same_scalar(sent: Any, dumped: Any) -> bool:
    if isinstance(sent, bool) or isinstance(dumped, bool):
        return type(sent) is type(dumped) and sent == dumped
    if isinstance(sent, (int, float)) and isinstance(dumped, (int, float)):
        return sent == dumped  # one JSON number: 1 and 1.0 are the same
    if isinstance(sent, str) and isinstance(dumped, str):
        return sent == dumped or same_instant(sent, dumped) or same_url(sent, dumped)
    return sent is None and dumped is None


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def compare(
    sent: Any,
    dumped: Any,
    path: tuple[Any, ...],
    out: Failures,
    skip: set[tuple[Any, ...]],
) -> None:
    if path in skip:
        return
    if isinstance(sent, dict):
        if not isinstance(dumped, dict):
            out.add(path, f"{kind(sent)} became {kind(dumped)} {short(dumped)}")
            return
        for key, value in sent.items():
            if key in dumped:
                compare(value, dumped[key], path + (key,), out, skip)
            elif value is None:
                out.add(path + (key,), "null, which the SDK never sends (it omits null fields)")
            else:
                out.add(path + (key,), f"unknown field, dropped by the SDK (value {short(value)})")
        # Keys only in `dumped` are defaults the SDK filled in: accepted.
    elif isinstance(sent, list):
        if not isinstance(dumped, list):
            out.add(path, f"{kind(sent)} became {kind(dumped)} {short(dumped)}")
            return
        if len(sent) != len(dumped):
            out.add(path, f"{len(sent)} elements became {len(dumped)}")
            return
        for i, (a, b) in enumerate(zip(sent, dumped)):
            compare(a, b, path + (i,), out, skip)
    elif not same_scalar(sent, dumped):
        out.add(path, f"{short(sent)} is coerced to {short(dumped)} by the SDK")


# --- what the SDK's server guarantees beyond the types -----------------------


def field_key(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    return info.serialization_alias or info.alias or name


def walk(
    obj: Any,
    path: tuple[Any, ...],
    widgets: list[tuple[tuple[Any, ...], dict[str, type[BaseModel]]]],
    out: Failures,
    response: bool,
) -> None:
    """Finds the widget trees of a validated value (their paths and what may be
    at their top) and checks the server's guarantees on the way."""
    if isinstance(obj, BaseModel):
        if response and isinstance(obj, (t.HiddenContextItem, t.SDKHiddenContextItem)):
            out.add(path, f"a {obj.type} item, which the SDK never sends to clients")
        if response and isinstance(obj, t.ThreadMetadata) and obj.metadata:
            out.add(path + ("metadata",), "not {}: the SDK never sends a thread's metadata")
        if isinstance(obj, t.WidgetItem) or isinstance(obj, t.WidgetRootUpdated):
            widgets.append((path + ("widget",), WIDGET_ROOTS))
        elif isinstance(obj, t.WidgetComponentUpdated):
            widgets.append((path + ("component",), WIDGET_COMPONENTS))
        model = type(obj)
        for name in model.model_fields:
            key = field_key(model, name)
            if path + (key,) in (p for p, _ in widgets):
                continue
            walk(getattr(obj, name), path + (key,), widgets, out, response)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            walk(v, path + (i,), widgets, out, response)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            walk(v, path + (k,), widgets, out, response)


def at(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def check_widget(
    node: Any,
    path: tuple[Any, ...],
    allowed: dict[str, type[BaseModel]],
    out: Failures,
) -> None:
    if not isinstance(node, dict):
        out.add(path, f"a widget node must be an object, got {short(node)}")
        return
    name = node.get("type")
    model = allowed.get(name) if isinstance(name, str) else None
    if model is None:
        out.add(path + ("type",), f"unknown component {short(name)} here; expected one of {', '.join(allowed)}")
        return
    known = {field_key(model, f) for f in model.model_fields}
    for key, value in node.items():
        if key not in known:
            out.add(path + (key,), f"unknown prop of {name} (value {short(value)})")
    # The node's own props; its children are checked node by node below.
    props = {k: v for k, v in node.items() if k in known and k != "children"}
    has_children = "children" in known and "children" in node
    children = node.get("children") if has_children else None
    if "children" in known and not has_children and model.model_fields["children"].is_required():
        out.add(path + ("children",), f"required by {name}")
        return
    own = dict(props)
    if has_children:
        # A stand-in of the right shape, or the value itself when it is neither.
        if isinstance(children, list):
            own["children"] = []
        elif isinstance(children, dict):
            own["children"] = None if model is w.Transition else []
        else:
            own["children"] = children
    try:
        instance = model.model_validate(own)
    except ValidationError as e:
        describe(e, path, out)
        return
    dumped = instance.model_dump(mode="json", by_alias=True, exclude_none=True)
    dumped.pop("children", None)
    compare(props, dumped, path, out, set())
    if children is None:
        return
    below = LIST_VIEW_ITEMS if model is w.ListView else WIDGET_COMPONENTS
    if model is w.Transition or (model is w.BasicRoot and isinstance(children, dict)):
        check_widget(children, path + ("children",), below, out)
    elif isinstance(children, list):
        for i, child in enumerate(children):
            check_widget(child, path + ("children", i), below, out)
    else:
        out.add(path + ("children",), f"must be an array of components, got {short(children)}")


# --- the three kinds ----------------------------------------------------------


def check(adapter: TypeAdapter[Any], value: Any, response: bool) -> list[str]:
    out = Failures()
    try:
        parsed = adapter.validate_json(json.dumps(value))
    except ValidationError as e:
        describe(e, (), out)
        return out.items
    dumped = adapter.dump_python(parsed, **(RESPONSE_DUMP if response else REQUEST_DUMP))
    widgets: list[tuple[tuple[Any, ...], dict[str, type[BaseModel]]]] = []
    walk(parsed, (), widgets, out, response)
    compare(value, dumped, (), out, {p for p, _ in widgets})
    for path, allowed in widgets:
        check_widget(at(value, path), path, allowed, out)
    return out.items


def handle(request: Any) -> list[str]:
    if not isinstance(request, dict):
        return ["the request line is not a JSON object"]
    what = request.get("kind")
    value = request.get("value")
    if what == "event":
        return check(EVENT, value, response=True)
    if what == "request":
        return check(REQUEST, value, response=False)
    if what == "answer":
        op = request.get("request")
        if op in EMPTY_ANSWERS:
            return [] if value == {} else [f"{op} answers exactly {{}} in ck-py, not {short(value)}"]
        if op in STREAMING:
            return [f"{op} answers a stream of events, not a JSON value"]
        adapter = ANSWERS.get(op) if isinstance(op, str) else None
        if adapter is None:
            return [f"no ChatKit request type {short(op)}"]
        return check(adapter, value, response=True)
    return [f"unknown kind {short(what)}: event, answer or request"]


def main() -> None:
    out = sys.stdout
    out.write(json.dumps({"ready": True, "chatkit": version("openai-chatkit")}) + "\n")
    out.flush()
    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            return
        try:
            errors = handle(json.loads(line))
        except json.JSONDecodeError as e:
            errors = [f"the request line is not JSON: {e}"]
        except Exception as e:  # a bug here must not desynchronize the caller
            errors = [f"validator error: {type(e).__name__}: {e}"]
        if errors:
            more = len(errors) - MAX_ERRORS
            text = "; ".join(errors[:MAX_ERRORS]) + (f"; and {more} more" if more > 0 else "")
            answer = {"ok": False, "error": text}
        else:
            answer = {"ok": True}
        out.write(json.dumps(answer, ensure_ascii=False) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
