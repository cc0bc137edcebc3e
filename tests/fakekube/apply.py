"""Field ownership (a simplified ``managedFields``) and the write verbs that change it: server-side apply, and the
updates of PUT, JSON merge patch, strategic merge patch and JSON patch.

An object's managers are ``Entry`` rows, one per (manager, operation, subresource) as on a real server, each with
the set of field paths it owns. A path is a tuple of map keys, with one element per item of a keyed list: lists of
maps whose items carry a merge key are keyed as the real schema keys them (``containers``, ``initContainers``,
``env``, ``volumes``, ``imagePullSecrets`` by ``name``; ``volumeMounts`` by ``mountPath``; container ports by
``containerPort`` and ``protocol``; Service ports by ``port`` and ``protocol``; ``ownerReferences`` by ``uid``).
Every other list (``args``, ``command``, ``tolerations``, NetworkPolicy rules, every list of a CRD) is atomic: one
leaf, owned and replaced whole. Status is not tracked: it is written through ``/status`` alone.

Server-side apply (``apply``), as structured-merge-diff does it:

- a leaf the applier sets that another manager owns with a different value is a conflict: 409 ``Apply failed with
  1 conflict: conflict with "kube-controller-manager" with subresource "scale" using apps/v1: .spec.replicas``
  unless ``force``, which moves the field to the applier;
- the applied fields merge into the object (maps by key, keyed lists by item);
- a field the applier owned and no longer applies is removed, unless another manager owns it too (then it stays,
  owned by that one alone). The caller defaults the result, so a dropped ``spec.replicas`` reads 1 again;
- the applier's set becomes exactly what it applied.

An update (``update_ownership``) gives its manager the fields it changed and takes them from everyone else.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.fakekube.kinds import ApiError, Resource, bad_request

Element = str | tuple[tuple[str, Any], ...]
Path = tuple[Element, ...]

_LIST_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "imagePullSecrets": ("name",),
    "volumeMounts": ("mountPath",),
    "ownerReferences": ("uid",),
}
_KEY_DEFAULTS = {"protocol": "TCP"}
# Metadata fields a manager can own; the rest of metadata is the server's.
_OWNED_METADATA = ("labels", "annotations", "ownerReferences", "finalizers")
_ITEM = object()  # the value recorded for a keyed list item itself


@dataclass
class Entry:
    """One ``managedFields`` row."""

    manager: str
    operation: str  # "Apply" or "Update"
    api_version: str
    time: str
    subresource: str = ""
    fields: set[Path] = field(default_factory=set)
    rendered: dict[str, Any] | None = None  # to_json's answer until fields or time change (see ``touched``)

    def touched(self) -> None:
        self.rendered = None

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.manager, self.operation, self.subresource)

    def describe(self) -> str:
        """How a conflict message names this manager (``printManager``)."""
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}"
        return text

    def to_json(self) -> dict[str, Any]:
        if self.rendered is not None:
            return self.rendered
        row: dict[str, Any] = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(self.fields),
        }
        if self.subresource:
            row["subresource"] = self.subresource
        self.rendered = row
        return row


def clone(entries: Iterable[Entry]) -> list[Entry]:
    return [
        Entry(e.manager, e.operation, e.api_version, e.time, e.subresource, set(e.fields), e.rendered) for e in entries
    ]


# ---------------------------------------------------------------- paths


def list_keys(name: Element, items: Any, keyed: bool = True) -> tuple[str, ...] | None:
    """The merge key of the list field ``name``, or None when the list is atomic."""
    if not keyed or not isinstance(name, str) or not isinstance(items, list) or not items:
        return None
    if not all(isinstance(item, dict) for item in items):
        return None
    keys: tuple[str, ...] | None = _LIST_KEYS.get(name)
    if name == "ports":
        if all("containerPort" in item for item in items):
            keys = ("containerPort", "protocol")
        elif all("port" in item for item in items):
            keys = ("port", "protocol")
    if keys is None or not all(keys[0] in item for item in items):
        return None
    return keys


def item_key(item: dict[str, Any], keys: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    return tuple((k, item.get(k, _KEY_DEFAULTS.get(k))) for k in keys)


def _walk(value: Any, path: Path, out: dict[Path, Any], keyed: bool) -> None:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            _walk(child, (*path, key), out, keyed)
        return
    keys = list_keys(path[-1], value, keyed) if path else None
    if keys is not None:
        for item in value:
            item_path = (*path, item_key(item, keys))
            out[item_path] = _ITEM
            for key, child in item.items():
                _walk(child, (*item_path, key), out, keyed)
        return
    out[path] = value


def leaves(obj: dict[str, Any] | None, resource: Resource) -> dict[Path, Any]:
    """Every owned path of ``obj`` with its value (keyed list items as markers)."""
    out: dict[Path, Any] = {}
    if not obj:
        return out
    for key, value in obj.items():
        if key in ("apiVersion", "kind") or (key == "status" and resource.status):
            continue
        if key == "metadata":
            for meta_key in _OWNED_METADATA:
                if isinstance(value, dict) and meta_key in value:
                    _walk(value[meta_key], ("metadata", meta_key), out, resource.builtin)
            continue
        _walk(value, (key,), out, resource.builtin)
    return out


def path_text(path: Path) -> str:
    """``.spec.template.spec.containers[name="model"].image``, as structured-merge-diff prints paths."""
    text = ""
    for element in path:
        if isinstance(element, str):
            text += f".{element}"
        else:
            text += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in element) + "]"
    return text


def fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in sorted(paths, key=path_text):
        node = root
        for element in path:
            if isinstance(element, str):
                name = f"f:{element}"
            else:
                name = "k:" + json.dumps(dict(element), separators=(",", ":"))
            node = node.setdefault(name, {})
        if path and not isinstance(path[-1], str):
            node.setdefault(".", {})
    return root


def _find(container: Any, element: Element) -> tuple[bool, Any]:
    if isinstance(element, str):
        if isinstance(container, dict) and element in container:
            return True, container[element]
        return False, None
    if isinstance(container, list):
        keys = tuple(k for k, _ in element)
        for item in container:
            if isinstance(item, dict) and item_key(item, keys) == element:
                return True, item
    return False, None


def _is_item_key(path: Path) -> bool:
    return len(path) >= 2 and isinstance(path[-2], tuple) and path[-1] in dict(path[-2])


def _delete(obj: dict[str, Any], path: Path) -> None:
    """Remove ``path`` from ``obj``; maps it leaves empty go too."""
    trail: list[tuple[Any, Element]] = []
    node: Any = obj
    for element in path[:-1]:
        found, child = _find(node, element)
        if not found:
            return
        trail.append((node, element))
        node = child
    last = path[-1]
    if isinstance(last, str):
        if isinstance(node, dict):
            node.pop(last, None)
    elif isinstance(node, list):
        keys = tuple(k for k, _ in last)
        node[:] = [i for i in node if not (isinstance(i, dict) and item_key(i, keys) == last)]
    for parent, element in reversed(trail):
        found, child = _find(parent, element)
        if not (found and child in ({}, [])):
            break
        if isinstance(element, str):
            parent.pop(element, None)
        else:
            keys = tuple(k for k, _ in element)
            parent[:] = [i for i in parent if not (isinstance(i, dict) and item_key(i, keys) == element)]


def _merge(live: Any, applied: Any, name: Element, keyed: bool) -> Any:
    if isinstance(live, dict) and isinstance(applied, dict):
        out = dict(live)
        for key, value in applied.items():
            out[key] = _merge(live.get(key), value, key, keyed)
        return out
    keys = list_keys(name, applied, keyed)
    if keys is not None and isinstance(live, list) and all(isinstance(i, dict) for i in live):
        by_key = {item_key(item, keys): item for item in live}
        merged, seen = [], set()
        for item in applied:
            key = item_key(item, keys)
            seen.add(key)
            merged.append(_merge(by_key.get(key), item, "", keyed))
        merged.extend(item for item in live if item_key(item, keys) not in seen)
        return merged
    return copy.deepcopy(applied)


# ---------------------------------------------------------------- server-side apply


def applied_config(resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
    """What of an apply body counts: no server-owned metadata, no status on a resource with ``/status``."""
    applied = {k: v for k, v in body.items() if not (k == "status" and resource.status)}
    meta = body.get("metadata") or {}
    applied["metadata"] = {k: v for k, v in meta.items() if k in ("name", "namespace", *_OWNED_METADATA)}
    return applied


def apply(
    resource: Resource,
    live: dict[str, Any] | None,
    applied: dict[str, Any],
    entries: list[Entry],
    manager: str,
    force: bool,
    api_version: str,
    now: str,
) -> tuple[dict[str, Any], list[Entry]]:
    """Merge ``applied`` into ``live`` for ``manager``: the new object (not yet defaulted) and the new entries."""
    entries = clone(entries)
    new_values = leaves(applied, resource)
    live_values = leaves(live, resource)
    mine = next((e for e in entries if e.identity == (manager, "Apply", "")), None)
    others = [e for e in entries if e is not mine]
    conflicts: list[tuple[Entry, Path]] = []
    for path, value in new_values.items():
        if value is _ITEM or path not in live_values or live_values[path] == value:
            continue
        conflicts += [(e, path) for e in others if path in e.fields]
    if conflicts and not force:
        raise conflict_error(conflicts)
    for entry, path in conflicts:
        entry.fields.discard(path)
        entry.touched()
    base = {k: v for k, v in (live or {}).items() if not (k == "status" and resource.status)}
    # A copy: the merge shares what it does not touch with ``live``, and removal below edits in place.
    merged: dict[str, Any] = json.loads(json.dumps(_merge(base, applied, "", resource.builtin)))
    owned_by_others = set().union(*(e.fields for e in others)) if others else set()
    dropped = (mine.fields if mine else set()) - set(new_values)
    for path in sorted(dropped, key=len, reverse=True):
        if any(q[: len(path)] == path for q in owned_by_others) or _is_item_key(path):
            continue  # still owned, or the key of an item that goes (or stays) as a whole
        _delete(merged, path)
    if live is not None and resource.status and "status" in live:
        merged["status"] = copy.deepcopy(live["status"])
    if mine is None:
        mine = Entry(manager, "Apply", api_version, now)
        entries.append(mine)
    if mine.fields != set(new_values) or mine.api_version != api_version:
        mine.fields, mine.time, mine.api_version = set(new_values), now, api_version
        mine.touched()
    return merged, [e for e in entries if e.fields]


def conflict_error(conflicts: list[tuple[Entry, Path]]) -> ApiError:
    conflicts = sorted(conflicts, key=lambda c: (c[0].describe(), path_text(c[1])))  # field sets iterate sorted
    causes = [
        {"reason": "FieldManagerConflict", "message": f"conflict with {e.describe()}", "field": path_text(p)}
        for e, p in conflicts
    ]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {entry.describe()}: {path_text(path)}"
    else:
        by_manager: dict[str, list[Path]] = {}
        for entry, path in conflicts:
            by_manager.setdefault(entry.describe(), []).append(path)
        lines = []
        for describe in sorted(by_manager):
            lines.append(f"conflicts with {describe}:")
            lines += [f"- {path_text(p)}" for p in by_manager[describe]]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


# ---------------------------------------------------------------- updates


def update_ownership(
    resource: Resource,
    old: dict[str, Any] | None,
    new: dict[str, Any],
    entries: list[Entry],
    manager: str,
    api_version: str,
    now: str,
    subresource: str = "",
) -> list[Entry]:
    """An Update by ``manager``: it owns what it changed, nobody owns what it removed."""
    entries = clone(entries)
    before, after = leaves(old, resource), leaves(new, resource)
    changed = {p for p, v in after.items() if p not in before or (v is not _ITEM and before[p] != v)}
    removed = set(before) - set(after)
    if not changed and not removed:
        return entries
    mine = next((e for e in entries if e.identity == (manager, "Update", subresource)), None)
    for entry in entries:
        if entry is not mine and entry.fields & (changed | removed):
            entry.fields -= changed | removed
            entry.touched()
    if mine is None:
        mine = Entry(manager, "Update", api_version, now, subresource)
        entries.append(mine)
    mine.fields = (mine.fields | changed) - removed
    mine.time, mine.api_version = now, api_version
    mine.touched()
    return [e for e in entries if e.fields]


# ---------------------------------------------------------------- patches


def merge_patch(base: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386): objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return copy.deepcopy(patch)
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_merge_patch(base: Any, patch: Any, name: Element = "", keyed: bool = True) -> Any:
    """Strategic merge patch: a JSON merge patch whose keyed lists merge by item (``$patch: delete`` removes one)."""
    if isinstance(patch, dict) and isinstance(base, dict):
        out = dict(base)
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if value is None:
                out.pop(key, None)
            else:
                out[key] = strategic_merge_patch(out.get(key), value, key, keyed)
        return out
    keys = list_keys(name, patch, keyed)
    if keys is not None and isinstance(base, list) and all(isinstance(i, dict) for i in base):
        merged = [dict(i) for i in base]
        for item in patch:
            key = item_key(item, keys)
            at = next((n for n, i in enumerate(merged) if item_key(i, keys) == key), None)
            if item.get("$patch") == "delete":
                if at is not None:
                    merged.pop(at)
            elif at is None:
                merged.append(strategic_merge_patch({}, item, "", keyed))
            else:
                merged[at] = strategic_merge_patch(merged[at], item, "", keyed)
        return merged
    if isinstance(patch, dict):
        return strategic_merge_patch({}, patch, name, keyed)
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"the server rejected our request due to an error in our request: bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _json_patch_step(doc: Any, op: dict[str, Any]) -> Any:
    parts = _pointer(str(op.get("path", "")))
    if not parts:
        return copy.deepcopy(op.get("value"))
    parent: Any = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    kind = op.get("op")
    if kind == "test":
        current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
        if current != op.get("value"):
            raise ApiError(422, "Invalid", f"the server rejected our request: testing value {op.get('path')} failed")
    elif kind == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    elif kind in ("add", "replace"):
        value = copy.deepcopy(op.get("value"))
        if isinstance(parent, list):
            if last == "-":
                parent.append(value)
            elif kind == "add":
                parent.insert(int(last), value)
            else:
                parent[int(last)] = value
        else:
            if kind == "replace" and last not in parent:
                raise ApiError(422, "Invalid", f"the server rejected our request: replace of missing path {op['path']}")
            parent[last] = value
    else:
        raise bad_request(f"the server rejected our request due to an error in our request: op {kind!r}")
    return doc


def json_patch(base: dict[str, Any], ops: Any) -> dict[str, Any]:
    """JSON patch (RFC 6902): ``add``, ``remove``, ``replace`` and ``test``."""
    if not isinstance(ops, list):
        raise bad_request("the server rejected our request due to an error in our request: a JSON patch is a list")
    doc: Any = copy.deepcopy(base)
    try:
        for op in ops:
            doc = _json_patch_step(doc, op)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise ApiError(422, "Invalid", f"the server rejected our request: {exc}") from exc
    if not isinstance(doc, dict):
        raise bad_request("the server rejected our request: the patched document is not an object")
    return doc
