"""Small pure helpers of `sourcefacts`: names and text of ast nodes, a function's local bindings, and the
linear rewrites of pattern text (each bounded: a pattern longer than MAX_PATTERN_CHARS refuses its file)."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from typing import Iterator

from pipeline.catalog.bounds import MAX_PATTERN_CHARS, Refused

WILDCARD = ".*"
# Nodes with nothing below them that sourcefacts looks at: a walk that does not enter them visits half the nodes
_LEAVES = (ast.Name, ast.Constant, ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop, ast.alias)


def children(node: ast.AST) -> Iterator[ast.AST]:
    """`ast.iter_child_nodes` without the leaves (names, constants, contexts, operators, aliases)."""
    for name in node._fields:
        value = getattr(node, name, None)
        if isinstance(value, list):
            for item in value:
                if isinstance(item, ast.AST) and not isinstance(item, _LEAVES):
                    yield item
        elif isinstance(value, ast.AST) and not isinstance(value, _LEAVES):
            yield value


def plain(value: object) -> object:
    """A dataclass as `dataclasses.asdict` gives it (new fields included), without its deep copies."""
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}  # type: ignore[arg-type]
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def local_bindings(func: ast.AST) -> tuple[dict[str, list[ast.expr]], set[str]]:
    """Values assigned to each name directly in `func` (not nested functions), and the names bound there in a way
    that cannot be read (loop target, with, unpacking, augmented assignment): one walk for every name."""
    values: dict[str, list[ast.expr]] = {}
    unreadable: set[str] = set()
    todo = list(children(func))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values.setdefault(target.id, []).append(node.value)
                else:
                    unreadable.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.value is not None:
                values.setdefault(node.target.id, []).append(node.value)
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            unreadable.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            unreadable.add(node.target.id)
        elif isinstance(node, ast.NamedExpr):
            values.setdefault(node.target.id, []).append(node.value)
        todo.extend(children(node))
    return values, unreadable


def signature(func: ast.FunctionDef | ast.AsyncFunctionDef
              ) -> tuple[list[str], dict[str, int], dict[str, ast.expr], bool]:
    """(positional names, every parameter -> its position (keyword-only ones after the positional), defaults,
    whether it is a method)."""
    positional = [a.arg for a in (*func.args.posonlyargs, *func.args.args)]
    index_of: dict[str, int] = {}
    for i, arg in enumerate([*positional, *(a.arg for a in func.args.kwonlyargs)]):
        index_of.setdefault(arg, i)
    defaults = dict(zip(positional[len(positional) - len(func.args.defaults):], func.args.defaults))
    defaults.update({a.arg: d for a, d in zip(func.args.kwonlyargs, func.args.kw_defaults) if d is not None})
    return positional, index_of, defaults, bool(positional) and positional[0] in ("self", "cls")


def call_keywords(call: ast.Call) -> dict[str, ast.expr] | None:
    """A call's keyword arguments by name, or None when it passes `*args` or `**kwargs` (unreadable)."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return None
    keywords: dict[str, ast.expr] = {}
    for k in call.keywords:
        keywords.setdefault(k.arg or "", k.value)
    return keywords


def _escape(text: str) -> str:
    if len(text) > MAX_PATTERN_CHARS:
        raise Refused(f"a loader argument longer than {MAX_PATTERN_CHARS:,} characters; not read")
    return re.escape(text)


def _check_length(patterns: list[str]) -> list[str]:
    if any(len(p) > MAX_PATTERN_CHARS for p in patterns):
        raise Refused(f"a loader argument longer than {MAX_PATTERN_CHARS:,} characters; not read")
    return patterns


def _format_fields(pattern: str) -> str:
    """Each `{...}` field of an escaped `.format` string as a wildcard, in one pass: what the substitution of
    backslash-brace, anything but a closing brace, backslash-brace did, without its quadratic time on a string of
    many opening braces and no closing one."""
    out: list[str] = []
    pos = 0
    while True:
        start = pattern.find("\\{", pos)
        if start < 0:
            break
        close = pattern.find("}", start + 2)
        if close < 0:
            break  # no field can close: none starts here or later
        if pattern[close - 1] == "\\" and close - 1 >= start + 2:
            out.append(pattern[pos:start])
            out.append(WILDCARD)
        else:  # every start before `close` ends at it, and fails the same way
            out.append(pattern[pos:close + 1])
        pos = close + 1
    out.append(pattern[pos:])
    return "".join(out)


def _literal_prefix(pattern: str) -> str:
    """The part of a regular expression before its first wildcard."""
    index = pattern.find(WILDCARD)
    return pattern if index < 0 else pattern[:index]


def _call_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _registry_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name) and node.id.endswith("_registry"):
        return node.id
    if isinstance(node, ast.Attribute) and node.attr.endswith("_registry"):
        return node.attr
    return None


def _dotted(node: ast.expr) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def unparse_cost(node: ast.AST, limit: int) -> int:
    """About what unparsing `node` costs (its nodes, and long strings by the thousand characters), counted up to
    `limit` only: the count itself must not cost what it bounds."""
    cost = 0
    for sub in ast.walk(node):
        cost += 1 + (len(sub.value) // 1000 if isinstance(sub, ast.Constant) and
                     isinstance(sub.value, (str, bytes)) else 0)
        if cost >= limit:
            break
    return cost


def _source(node: ast.AST) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # noqa: BLE001 - unparse of odd trees; the text is only for messages
        text = "<expression>"
    return text if len(text) <= 200 else text[:197] + "..."
