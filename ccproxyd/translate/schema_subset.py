"""Tool schemas cut to a provider's JSON Schema subset, losing nothing silently (pure, no I/O).

Gemini's function declarations take the OpenAPI-style `Schema` object, whose fields are listed
at https://ai.google.dev/api/caching#Schema (type, format, title, description, nullable, enum,
maxItems, minItems, properties, required, minProperties, maxProperties, minLength, maxLength,
pattern, example, anyOf, propertyOrdering, default, items, minimum, maximum).  Claude Code
2.1.260+ sends JSON Schema 2020-12 keywords outside that list (`prefixItems`, `$ref`/`$defs`,
`const`, `oneOf`, type lists, `additionalProperties`, …).  Each is rewritten to its documented
equivalent where one exists (REWRITES below); every other keyword is kept as JSON text in the
node's `description`, so the model still reads the constraint the server cannot enforce.
"""

from __future__ import annotations

import orjson

GEMINI_KEYS = frozenset((
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
    "propertyOrdering", "default", "items", "minimum", "maximum"))
DEFINITION_KEYS = ("$defs", "definitions")
DROPPED_QUIETLY = ("$schema", "$id", "$comment")   # name or annotate the document; constrain nothing
MAX_REF_DEPTH = 8
NOTE = "JSON Schema constraints not enforced here: "


def to_gemini(schema: dict) -> dict:
    """The schema in Gemini's subset.  `$ref`s resolve against the root's `$defs`/`definitions`."""
    definitions: dict = {}
    for key in DEFINITION_KEYS:
        if isinstance(schema.get(key), dict):
            definitions.update(schema[key])
    return _node(schema, definitions, 0)


def _ref_target(ref, definitions: dict):
    if isinstance(ref, str):
        for prefix in ("#/$defs/", "#/definitions/"):
            name = ref[len(prefix):]
            if ref.startswith(prefix) and isinstance(definitions.get(name), dict):
                return definitions[name]
    return None


def _merge_all_of(node: dict) -> dict:
    """`allOf` as one schema: properties and required united, other keys first-wins."""
    merged = {k: v for k, v in node.items() if k != "allOf"}
    for part in node["allOf"] if isinstance(node["allOf"], list) else ():
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**value, **(merged.get("properties") or {})}
            elif key == "required" and isinstance(value, list):
                merged["required"] = list(dict.fromkeys([*(merged.get("required") or []), *value]))
            else:
                merged.setdefault(key, value)
    return merged


def _node(node, definitions: dict, depth: int) -> dict:
    if not isinstance(node, dict):         # a boolean schema: true accepts anything
        return {} if node is True else {"description": NOTE + orjson.dumps(node).decode()}
    if "$ref" in node:
        target = _ref_target(node["$ref"], definitions) if depth < MAX_REF_DEPTH else None
        rest = {k: v for k, v in node.items() if k != "$ref"}
        if target is not None:
            return _node({**target, **rest}, definitions, depth + 1)
        rest["description"] = _with_note(rest.get("description"), {"$ref": node["$ref"]})
        node = rest
    if "allOf" in node:
        node = _merge_all_of(node)
    out: dict = {}
    unenforced: dict = {}
    for key, value in node.items():
        if key in DROPPED_QUIETLY or key in DEFINITION_KEYS:
            continue
        rewrite = REWRITES.get(key)
        if rewrite is not None:
            rewrite(value, out, unenforced, definitions, depth)
        elif key in GEMINI_KEYS:
            out[key] = value
        else:
            unenforced[key] = value
    if unenforced:
        out["description"] = _with_note(out.get("description"), unenforced)
    return out


def _with_note(description, unenforced: dict) -> str:
    note = NOTE + orjson.dumps(unenforced).decode()
    return f"{description}\n{note}" if description else note


def _type(value, out: dict, unenforced: dict, definitions: dict, depth: int) -> None:
    if not isinstance(value, list):
        out["type"] = value
        return
    kinds = [t for t in value if t != "null"]     # ["string", "null"] -> string, nullable
    if "null" in value:
        out["nullable"] = True
    if len(kinds) == 1:
        out["type"] = kinds[0]
    elif kinds:
        out["anyOf"] = [*out.get("anyOf", []), *({"type": t} for t in kinds)]


def _any_of(value, out: dict, unenforced: dict, definitions: dict, depth: int) -> None:
    branches = [b for b in value if isinstance(b, dict)] if isinstance(value, list) else []
    if any(b == {"type": "null"} for b in branches):
        out["nullable"] = True
        branches = [b for b in branches if b != {"type": "null"}]
    converted = [_node(b, definitions, depth + 1) for b in branches]
    if len(converted) == 1 and "anyOf" not in out:
        for key, sub in converted[0].items():
            out.setdefault(key, sub)
    elif converted:
        out["anyOf"] = [*out.get("anyOf", []), *converted]


def _one_of(value, out: dict, unenforced: dict, definitions: dict, depth: int) -> None:
    """As anyOf; Gemini checks "at least one", so "exactly one" stays as text."""
    _any_of(value, out, unenforced, definitions, depth)
    if "anyOf" in out:
        unenforced["oneOf"] = "exactly one of the anyOf branches"


def _const(value, out: dict, unenforced: dict, definitions: dict, depth: int) -> None:
    out["enum"] = [value]


def _items(value, out: dict, unenforced: dict, definitions: dict, depth: int) -> None:
    if isinstance(value, dict):
        out["items"] = _node(value, definitions, depth + 1)
    elif value is False:
        unenforced["items"] = False              # nothing allowed beyond prefixItems
    else:
        out["items"] = {}


def _prefix_items(value, out: dict, unenforced: dict, definitions: dict, depth: int) -> None:
    """Positional item schemas: each item may be any of them; the positions stay as text."""
    branches = [_node(b, definitions, depth + 1) for b in value] if isinstance(value, list) else []
    if branches and "items" not in out:
        out["items"] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    unenforced["prefixItems"] = value


def _properties(value, out: dict, unenforced: dict, definitions: dict, depth: int) -> None:
    if isinstance(value, dict):
        out["properties"] = {name: _node(sub, definitions, depth + 1) for name, sub in value.items()}


# JSON Schema keyword -> its rewrite into Gemini's subset.  A keyword neither here nor in
# GEMINI_KEYS goes into the node's description as JSON text (the explicit unknown path).
REWRITES = {
    "type": _type,
    "anyOf": _any_of,
    "oneOf": _one_of,
    "const": _const,
    "items": _items,
    "prefixItems": _prefix_items,
    "properties": _properties,
}
