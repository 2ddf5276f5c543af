"""What one Python file defines, as far as a benchmark's construction needs it: module constants, functions and
classes (their parameters, local assignments, loop variables, returns and `super().__init__` calls), imports,
and the value each registry entry is given. Read with `ast`, never run; kept as small JSON lists (the "IR") so
that the facts cache can hold them by blob id and `pipeline.catalog.parents` can follow a registration across
files without parsing again.

IR, one list per expression: ["s", text] ["n"] (None) ["i", int] ["b", bool] ["v", name] ["a", base, attr]
["c", func, [args], [[keyword or None, value]]] ["f", [parts]] (f-string) ["+", l, r] ["or", [values]]
["if", body, orelse, test] ["==" or "!=", l, r] ["l", [items]] ["[", value, index]
["L", [params], {param: default}, body] (lambda) ["*", value] (a starred argument)
["?", source] (not followed: the reason names the source).
"""

from __future__ import annotations

import ast
from collections import deque

from pipeline.catalog.bounds import Refused

MAX_DEPTH = 12  # nesting of one expression kept; deeper is ["?", ...]
MAX_ITEMS = 64  # items of a literal list kept; more is ["?", ...]
MAX_NODES = 40_000  # IR nodes kept per file; past it, function bodies are left out (their lookups say so)
MAX_TEXT = 1000  # a string constant longer than this is not an identifier or a parent
MAX_SOURCE = 120  # characters of an expression's source kept for a message
# Steps per file: statements visited, IR nodes built and nodes visited to unparse a message's source. A safety net
# over the bounds above (each makes the work linear): a file past it is refused by name, never read for hours.
# A 2 MB file of one-line assignments takes about 710,000 (3 s); vision's largest file 4,380 (207 kB).
MAX_STEPS = 2_000_000

try:  # the standard library's unparser (ast._Unparser up to Python 3.13), stopped once the message is long enough
    _Unparser = ast._Unparser  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - Python 3.14 moved it
    from _ast_unparse import Unparser as _Unparser  # type: ignore[import-not-found, no-redef]


class _Cut(Exception):
    """Enough source text for a message: unparsing stops here."""


class _BoundedUnparser(_Unparser):
    """`ast.unparse` that stops once the message has MAX_SOURCE + 1 characters: its cost is that of the text kept,
    not of the whole expression (issue 35: unparsing a right-hand side of 4000 calls once per unpacked name took
    minutes). Parts of an f-string are written to a buffer first, then again: all writes together are bounded too."""

    def __init__(self, *, _avoid_backslashes: bool = False, counter: list[int] | None = None) -> None:
        super().__init__(_avoid_backslashes=_avoid_backslashes)
        self.top: list[str] | None = None
        self.kept = self.written = 0
        self.counter = counter if counter is not None else [0]

    def write(self, *text: str) -> None:
        super().write(*text)
        size = sum(len(t) for t in text)
        self.written += size
        if self._source is self.top:
            self.kept += size
        if self.kept > MAX_SOURCE or self.written > 16 * MAX_SOURCE:
            raise _Cut

    def traverse(self, node) -> None:  # noqa: ANN001 - a node or a list of nodes
        self.counter[0] += 1
        super().traverse(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, (str, bytes)) and len(value) > MAX_SOURCE:  # not formatted whole
            rest = value[MAX_SOURCE + 1:MAX_SOURCE + 4096]  # its quotes choose the quote type, as unparse's would
            quotes = [q for q in ("'''", '"""', "'", '"') if (q if isinstance(value, str) else q.encode()) in rest]
            tail = "".join(quotes)
            node = ast.Constant(value=value[:MAX_SOURCE + 1] + (tail if isinstance(value, str) else tail.encode()),
                                kind=node.kind)
        super().visit_Constant(node)


def source_text(node: ast.AST, counter: list[int] | None = None) -> str:
    """A node's source for messages, cut to MAX_SOURCE characters; `counter[0]` counts the nodes visited."""
    unparser = _BoundedUnparser(counter=counter)
    top: list[str] = []
    unparser._source = unparser.top = top
    try:
        unparser.traverse(node)
    except _Cut:
        inner = unparser._source  # cut inside an f-string, whose parts are written to a buffer first
        text = "".join(top) + ('"' + "".join(inner) if inner is not top else "")
        return text if len(text) <= MAX_SOURCE and inner is top else text[:MAX_SOURCE - 3] + "..."
    except Exception:  # noqa: BLE001 - unparse of odd trees (or nested past the recursion limit): only a message
        return "<expression>"
    text = "".join(top)
    return text if len(text) <= MAX_SOURCE else text[:MAX_SOURCE - 3] + "..."


class _Builder:
    def __init__(self) -> None:
        self.nodes = 0
        self.steps = [0]  # a list: the unparser adds its own visits

    def step(self, cost: int = 1) -> None:
        """Count work; a file past MAX_STEPS is refused (a safety net under the linear bounds)."""
        self.steps[0] += cost
        if self.steps[0] > MAX_STEPS:
            raise Refused(f"too costly to read statically (more than {MAX_STEPS:,} steps); not read")

    def source(self, node: ast.AST) -> str:
        text = source_text(node, self.steps)
        self.step(0)
        return text

    def ir(self, node: ast.AST | None, depth: int = 0) -> list:
        self.nodes += 1
        self.step()
        if node is None:
            return ["n"]
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            return ["?", self.source(node)]
        d = depth + 1
        if isinstance(node, ast.Constant):
            v = node.value
            if v is None:
                return ["n"]
            if isinstance(v, bool):
                return ["b", v]
            if isinstance(v, int):
                return ["i", v]
            if isinstance(v, str) and len(v) <= MAX_TEXT:
                return ["s", v]
            return ["?", self.source(node)]
        if isinstance(node, ast.Name):
            return ["v", node.id]
        if isinstance(node, ast.Attribute):
            return ["a", self.ir(node.value, d), node.attr]
        if isinstance(node, ast.Call):
            args = [["*", self.ir(a.value, d)] if isinstance(a, ast.Starred) else self.ir(a, d) for a in node.args]
            return ["c", self.ir(node.func, d), args, [[k.arg, self.ir(k.value, d)] for k in node.keywords]]
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                if isinstance(value, ast.Constant):
                    parts.append(["s", str(value.value)])
                elif isinstance(value, ast.FormattedValue) and value.conversion in (-1, 115) \
                        and value.format_spec is None:
                    parts.append(self.ir(value.value, d))
                else:
                    parts.append(["?", self.source(value)])
            return ["f", parts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return ["+", self.ir(node.left, d), self.ir(node.right, d)]
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or):
            return ["or", [self.ir(v, d) for v in node.values]]
        if isinstance(node, ast.IfExp):
            return ["if", self.ir(node.body, d), self.ir(node.orelse, d), self.ir(node.test, d)]
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
            return ["==" if isinstance(node.ops[0], ast.Eq) else "!=", self.ir(node.left, d),
                    self.ir(node.comparators[0], d)]
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)) and len(node.elts) <= MAX_ITEMS:
            if any(isinstance(e, ast.Starred) for e in node.elts):
                return ["?", self.source(node)]
            return ["l", [self.ir(e, d) for e in node.elts]]
        if isinstance(node, ast.Subscript):
            return ["[", self.ir(node.value, d), self.ir(node.slice, d)]
        if isinstance(node, ast.Lambda):
            params, defaults = _params(node.args)
            return ["L", params, {p: self.ir(v, d) for p, v in defaults.items()}, self.ir(node.body, d)]
        return ["?", self.source(node)]

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | None) -> dict | None:
        """Parameters, defaults, local assignments, loop variables, returns and `super().__init__` calls."""
        if node is None:
            return None
        params, defaults = _params(node.args)
        out: dict = {"p": params, "d": {p: self.ir(v) for p, v in defaults.items()},
                     "kw": node.args.kwarg.arg if node.args.kwarg else None, "line": node.lineno,
                     "as": {}, "lp": {}, "r": [], "sc": [], "sa": {}}  # sa: `self.x = ...` (first parameter)
        if self.nodes > MAX_NODES:
            out["cut"] = True  # the body is not kept: lookups in it say so
            return out
        todo: deque[ast.AST] = deque(node.body)
        while todo:
            stmt = todo.popleft()
            self.step()
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out["as"].setdefault(stmt.name, []).append(["?", f"{stmt.name} is defined inside a function"])
                continue
            if isinstance(stmt, ast.Assign):
                for target in stmt.targets:
                    self._bind(out, target, stmt.value)
            elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                self._bind(out, stmt.target, stmt.value)
            elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
                out["as"].setdefault(stmt.target.id, []).append(["?", self.source(stmt)])
            elif isinstance(stmt, (ast.For, ast.AsyncFor)):
                if isinstance(stmt.target, ast.Name):
                    out["lp"][stmt.target.id] = self.ir(stmt.iter)
                else:
                    for name in _names(stmt.target):
                        out["as"].setdefault(name, []).append(["?", f"{name} is unpacked by a loop"])
            elif isinstance(stmt, ast.Return) and stmt.value is not None:
                out["r"].append(self.ir(stmt.value))
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) and _is_init_call(stmt.value):
                out["sc"].append(self.ir(stmt.value))
            elif isinstance(stmt, (ast.With, ast.AsyncWith)):
                for item in stmt.items:
                    if item.optional_vars is not None:
                        for name in _names(item.optional_vars):
                            out["as"].setdefault(name, []).append(["?", f"{name} is bound by a with"])
            if isinstance(stmt, (ast.Expr, ast.Return)) and _yields(stmt):
                out["gen"] = True
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo.extend(getattr(stmt, field, []) or [])
        return out

    def _bind(self, out: dict, target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and out["p"] and \
                target.value.id == out["p"][0]:
            out["sa"].setdefault(target.attr, []).append(self.ir(value))
            return
        if isinstance(target, (ast.Attribute, ast.Subscript)):
            return  # `obj.x = ...` and `d[k] = ...` rebind no name
        if isinstance(target, ast.Name):
            out["as"].setdefault(target.id, []).append(self.ir(value))
        else:
            names = _names(target)
            self.step(len(names))
            source = self.source(value) if names else ""  # once per statement, not once per name
            for name in names:
                out["as"].setdefault(name, []).append(["?", f"{name} is unpacked from {source}"])


def _params(args: ast.arguments) -> tuple[list[str], dict[str, ast.expr]]:
    positional = [a.arg for a in (*args.posonlyargs, *args.args)]
    defaults = dict(zip(positional[len(positional) - len(args.defaults):], args.defaults))
    defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None})
    return positional + [a.arg for a in args.kwonlyargs], defaults


def _names(target: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


def _yields(stmt: ast.AST) -> bool:
    return any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in ast.walk(stmt))


def _is_init_call(call: ast.Call) -> bool:
    """`super().__init__(...)`, `super(C, self).__init__(...)`, `Base.__init__(self, ...)`."""
    return isinstance(call.func, ast.Attribute) and call.func.attr == "__init__"


def _registry(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name) and node.id.endswith("_registry"):
        return node.id
    if isinstance(node, ast.Attribute) and node.attr.endswith("_registry"):
        return node.attr
    return None


def read_construction(tree: ast.Module) -> dict:
    """A module's construction facts (see the module docstring): `as` constants, `lp` module loop variables,
    `fn` functions, `cl` classes (bases, `__init__`, class attributes), `im` imported names, `rg` registrations
    (registry -> id -> value)."""
    b = _Builder()
    out: dict = {"as": {}, "lp": {}, "fn": {}, "cl": {}, "im": {}, "rg": {}}
    todo: deque[ast.AST] = deque(tree.body)
    while todo:
        stmt = todo.popleft()
        b.step()
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out["fn"][stmt.name] = b.function(stmt)
        elif isinstance(stmt, ast.ClassDef):
            init = next((s for s in stmt.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
                         and s.name == "__init__"), None)
            attrs: dict = {}
            for s in stmt.body:
                if isinstance(s, ast.Assign):
                    for t in s.targets:
                        if isinstance(t, ast.Name):
                            attrs.setdefault(t.id, []).append(b.ir(s.value))
            out["cl"][stmt.name] = {"b": [b.ir(base) for base in stmt.bases], "i": b.function(init), "at": attrs,
                                    "line": stmt.lineno}
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    out["as"].setdefault(target.id, []).append(b.ir(stmt.value))
                elif isinstance(target, ast.Subscript) and _registry(target.value) and \
                        isinstance(target.slice, ast.Constant) and isinstance(target.slice.value, str):
                    out["rg"].setdefault(_registry(target.value), {})[target.slice.value] = b.ir(stmt.value)
                elif not isinstance(target, (ast.Subscript, ast.Attribute)):
                    for name in _names(target):
                        out["as"].setdefault(name, []).append(["?", f"{name} is unpacked"])
        elif isinstance(stmt, ast.ImportFrom):
            for alias in stmt.names:
                out["im"][alias.asname or alias.name] = [stmt.level or 0, stmt.module or "", alias.name]
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                local = alias.asname or alias.name.split(".")[0]
                out["im"][local] = [0, alias.name if alias.asname else alias.name.split(".")[0], None]
        elif isinstance(stmt, (ast.For, ast.AsyncFor)) and isinstance(stmt.target, ast.Name):
            out["lp"][stmt.target.id] = b.ir(stmt.iter)
            todo.extend(stmt.body)
        elif isinstance(stmt, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo.extend(getattr(stmt, field, []) or [])
    return out
