"""What one Python file of a plugin repository registers, loads and imports, read with `ast`.

Nothing here imports or runs the file. The facts of a file depend on its bytes only, so they are cached by git
blob id (`factscache`), and reading them is bounded (`bounds`): a file that would cost more is refused.

Loader arguments are read as far as they can be bounded statically: a constant, an
f-string or a `.format`/`%`/`+` of known parts (turned into a regular expression that
is matched against every registered id), a module constant, or a parameter whose every
call site in the same file passes something readable. What cannot be bounded is
recorded as such (`patterns is None`) and the catalog makes it depend on every plugin
of the loader's type, rather than on nothing.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from pipeline import bigints
from pipeline.catalog.astread import (WILDCARD, _call_name, _check_length, _dotted, _escape, _format_fields,
                                      _literal_prefix, _registry_name, _source, call_keywords, children,
                                      local_bindings, plain, signature, unparse_cost)
from pipeline.catalog.bounds import (MAX_FACT_CHARS, MAX_PATTERN_CHARS, MAX_PYTHON_BYTES, MAX_RESOLUTION_STEPS,
                                     Refused)

MAX_ALTERNATIVES = 64  # more alternatives than this for one argument: treat as unbounded
MAX_DEPTH = 6
WILDCARD_RUN = re.compile(r"(\.\*)+")
PERCENT_FIELD = re.compile(r"%[-#0 +]*+\d*+(?:\\\.\d++)?[sdifrxXeEgGa]")  # possessive: linear on any text


@dataclass
class Registration:
    registry: str
    key: str | None  # None: computed, cannot be read without running the plugin
    line: int
    text: str = ""  # the key's source when computed


@dataclass
class Load:
    """A call of a domain loader (`load_dataset(...)`) or a read of a registry (`data_registry[...]`)."""

    loader: str
    base: str  # the module it comes from: "" unknown (star import), `brainscore_vision`, `.helpers`, `self`...
    patterns: list[str] | None  # regular expressions (full match) the id may take; None: cannot be bounded
    line: int
    text: str  # the argument's source, for messages


@dataclass
class ImportRef:
    level: int  # 0 absolute, 1 `from .x`, 2 `from ..x`
    module: str
    names: list[str]
    line: int


@dataclass
class Declaration:
    """A benchmark constructor call with `parent=` (Brain-Score's `BenchmarkBase(..., version=1, parent='V4')`)."""

    parents: list[str] | None  # regular expressions (full match) the parent may take; None: cannot be bounded
    version: int | None  # the `version=` constant of the same call, None when absent or not a constant
    line: int
    text: str  # the parent argument's source, for messages
    identifiers: list[str] | None = None  # patterns of the same call's `identifier=` (or first argument)
    # `parent=region` with `identifier=f'X.{region}-pls'`: a regular expression whose group `parent` is the
    # part of the identifier the parent variable fills (the id then says the parent)
    parent_in_identifier: str | None = None


@dataclass
class FileFacts:
    registrations: list[Registration] = field(default_factory=list)
    loads: list[Load] = field(default_factory=list)
    imports: list[ImportRef] = field(default_factory=list)
    loader_defs: dict[str, str] = field(default_factory=dict)  # load_x -> "registry:r" | "loader:l" | "type:t"
    declarations: list[Declaration] = field(default_factory=list)
    syntax_error: tuple[int, str] | None = None
    refused: str | None = None  # over a reading bound (pipeline.catalog.bounds): why; the file's facts are empty

    def to_json(self) -> dict:
        return plain(self)  # what dataclasses.asdict gives, without its deep copies (a tenth of the time)

    @classmethod
    def from_json(cls, data: dict) -> "FileFacts":
        return cls(
            registrations=[Registration(**r) for r in data["registrations"]],
            loads=[Load(**x) for x in data["loads"]],
            imports=[ImportRef(**i) for i in data["imports"]],
            loader_defs=dict(data["loader_defs"]),
            declarations=[Declaration(**d) for d in data.get("declarations", [])],
            syntax_error=tuple(data["syntax_error"]) if data["syntax_error"] else None,  # type: ignore[arg-type]
            refused=data.get("refused"),
        )


def is_loader_name(name: str) -> bool:
    return name.startswith("load_") or name.endswith("_registry")


def read_facts(source: bytes, filename: str = "<plugin>") -> FileFacts:
    """The facts of one file; a syntax error is a fact too (its line and message), and so is a file over a reading
    bound (`refused`): what is read of a submitted file is linear in its size, whatever it holds."""
    tree = parse_source(source, filename)
    return tree if isinstance(tree, FileFacts) else facts_of_tree(tree)


def parse_source(source: bytes, filename: str = "<plugin>") -> ast.Module | FileFacts:
    """The module's tree, or the facts that say why there is none (too large, a syntax error, nested too deeply):
    parsed once for every kind of fact a Python blob gives (`pyfacts`)."""
    if len(source) > MAX_PYTHON_BYTES:
        return FileFacts(refused=f"larger than {MAX_PYTHON_BYTES:,} bytes ({len(source):,}); not read")
    try:
        tree = ast.parse(source, filename=filename)
    except (SyntaxError, ValueError) as exc:  # ValueError: NUL bytes in the source
        return FileFacts(syntax_error=(getattr(exc, "lineno", 0) or 0, getattr(exc, "msg", str(exc))))
    except (RecursionError, MemoryError):  # `a+a+...` or `not not ...` thousands deep: Python gives up
        return FileFacts(refused="nested too deeply for Python to parse; not read")
    too_large = bigints.python_reason(source, tree)  # a literal no fact, message or cache could print
    return FileFacts(refused=too_large) if too_large else tree


def facts_of_tree(tree: ast.Module) -> FileFacts:
    """The facts of a parsed file (`read_facts`), within the reading bounds."""
    try:
        return _Reader(tree).facts()
    except Refused as exc:
        return FileFacts(refused=str(exc))
    except RecursionError:
        return FileFacts(refused="nested too deeply to read statically; not read")


class _Reader:
    """One pass indexes the module; loader arguments are then resolved on demand."""

    def __init__(self, tree: ast.Module):
        self.tree = tree
        self.module_assigns: dict[str, list[ast.expr]] = {}
        self.functions: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {}
        self.calls: dict[str, list[ast.Call]] = {}
        self.stack_of: dict[int, tuple[ast.AST, ...]] = {}  # id(call) -> enclosing function defs, outermost first
        self.local_defs: set[str] = set()  # names the module binds itself (a local `load_x` is not the domain's)
        self.aliases: dict[str, str] = {}  # `from dom import load_dataset as ld`: ld -> load_dataset
        self.imported_from: dict[str, str] = {}  # local name of a load_* -> the module it was imported from
        self.module_aliases: dict[str, str] = {}  # `import dom as d`: d -> dom
        self.facts_ = FileFacts()
        self._declaring = False
        self._candidates: list[tuple[ast.AST, tuple[ast.AST, ...]]] = []
        # Resolution is memoised and counted, so that no file costs more than MAX_RESOLUTION_STEPS (a call
        # chain that fans out at every level would otherwise cost sites ** depth).
        self._memo: dict[tuple, list[str] | None] = {}
        self._steps = 0
        self._fact_chars = 0
        self._locals: dict[int, tuple[dict[str, list[ast.expr]], set[str]]] = {}
        self._signatures: dict[int, tuple[list[str], dict[str, int], dict[str, ast.expr], bool]] = {}
        self._call_keywords: dict[int, dict[str, ast.expr] | None] = {}

    def facts(self) -> FileFacts:
        self._index(self.tree, ())
        for node, stack in self._candidates:
            self._record(node, stack)
        self.facts_.registrations.sort(key=lambda r: r.line)
        self.facts_.loads.sort(key=lambda x: x.line)
        self.facts_.declarations.sort(key=lambda d: d.line)
        self._loader_defs()
        return self.facts_

    # -- indexing -------------------------------------------------------------------------------------------
    def _index(self, node: ast.AST, stack: tuple[ast.AST, ...]) -> None:
        for child in children(node):
            if isinstance(child, (ast.List, ast.Tuple, ast.Set)) and child.elts and \
                    all(isinstance(e, ast.Constant) for e in child.elts):
                continue  # a large literal table holds no call; skipping it keeps data plugins cheap
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions.setdefault(child.name, []).append(child)
                if not stack:
                    self.local_defs.add(child.name)
                self._index(child, stack + (child,))
                continue
            if isinstance(child, ast.ClassDef) and not stack:
                self.local_defs.add(child.name)
            if isinstance(child, (ast.Assign, ast.AnnAssign)) and not stack:
                targets = child.targets if isinstance(child, ast.Assign) else [child.target]
                for target in targets:
                    if isinstance(target, ast.Name) and child.value is not None:
                        self.module_assigns.setdefault(target.id, []).append(child.value)
                        if is_loader_name(target.id) and not target.id.endswith("_registry"):
                            self.local_defs.add(target.id)
            if isinstance(child, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                self._candidates.append((child, stack))
            elif isinstance(child, ast.Call):
                name = _call_name(child.func)
                if name:
                    self.calls.setdefault(name, []).append(child)
                    self.stack_of[id(child)] = stack
                self._candidates.append((child, stack))
            elif isinstance(child, ast.Subscript) and isinstance(child.ctx, ast.Load):
                self._candidates.append((child, stack))
            elif isinstance(child, ast.ImportFrom):
                self.facts_.imports.append(ImportRef(child.level or 0, child.module or "",
                                                     [a.name for a in child.names], child.lineno))
                for alias in child.names:
                    if alias.asname and is_loader_name(alias.name):
                        self.aliases[alias.asname] = alias.name
                    if is_loader_name(alias.name):
                        self.imported_from[alias.asname or alias.name] = "." * (child.level or 0) + (child.module or "")
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    self.facts_.imports.append(ImportRef(0, alias.name, [], child.lineno))
                    if alias.asname:
                        self.module_aliases[alias.asname] = alias.name
            self._index(child, stack)

    # -- recording ------------------------------------------------------------------------------------------
    def _record(self, node: ast.AST, stack: tuple[ast.AST, ...]) -> None:
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Subscript):
                    registry = _registry_name(target.value)
                    if registry:
                        key = target.slice
                        if isinstance(key, ast.Constant) and isinstance(key.value, str):
                            self._count(key.value)
                            self.facts_.registrations.append(Registration(registry, key.value, target.lineno))
                        else:
                            self.facts_.registrations.append(
                                Registration(registry, None, target.lineno, self._text(key)))
            return
        if isinstance(node, ast.Call):
            self._declaration(node, stack)
            func = node.func
            if isinstance(func, ast.Attribute) and _registry_name(func.value) and \
                    func.attr in ("update", "setdefault", "__setitem__"):
                self.facts_.registrations.append(
                    Registration(_registry_name(func.value) or "", None, node.lineno, f".{func.attr}(...)"))
                return
            loader, base = self._loader_of(func)
            if loader is None:
                return
            arg = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg in ("identifier", "name", "id")), None)
            if arg is None or isinstance(arg, ast.Starred):
                # load_x(*args) / load_x(**kw) cannot be bounded; load_x(other=...) is not a domain loader's shape
                if isinstance(arg, ast.Starred) or (not node.args and any(k.arg is None for k in node.keywords)):
                    self.facts_.loads.append(Load(loader, base, None, node.lineno, self._text(node)))
                return
            patterns = self._patterns(arg, stack, 0)
            self._count(*(patterns or ()))
            self.facts_.loads.append(Load(loader, base, patterns, node.lineno, self._text(arg)))
            return
        if isinstance(node, ast.Subscript):
            registry = _registry_name(node.value)
            if registry:
                base = _dotted(node.value.value) if isinstance(node.value, ast.Attribute) else ""
                patterns = self._patterns(node.slice, stack, 0)
                self._count(*(patterns or ()))
                self.facts_.loads.append(Load(registry, base or "", patterns, node.lineno, self._text(node.slice)))

    def _loader_of(self, func: ast.expr) -> tuple[str | None, str]:
        if isinstance(func, ast.Name):
            name = self.aliases.get(func.id, func.id)
            if name.startswith("load_") and func.id not in self.local_defs:
                # imported from another module: the catalog keeps it only when that module is the domain's
                return name, self.imported_from.get(func.id, "")
            return None, ""
        if isinstance(func, ast.Attribute) and func.attr.startswith("load_"):
            base = _dotted(func.value)
            if base:
                head, _, rest = base.partition(".")
                base = self.module_aliases.get(head, head) + ("." + rest if rest else "")
                return func.attr, base
        return None, ""

    def _declaration(self, node: ast.Call, stack: tuple[ast.AST, ...]) -> None:
        """A call with `parent=`: where the benchmark hangs in the leaderboard's tree, and its version."""
        parent = next((k.value for k in node.keywords if k.arg == "parent"), None)
        if parent is None:
            return
        version_arg = next((k.value for k in node.keywords if k.arg == "version"), None)
        version = version_arg.value if isinstance(version_arg, ast.Constant) and \
            isinstance(version_arg.value, int) and not isinstance(version_arg.value, bool) else None
        if isinstance(parent, ast.Constant) and parent.value is None:
            patterns: list[str] | None = []  # parent=None: explicitly no parent
        else:
            patterns = self._patterns(parent, stack, 0)
        ident = next((k.value for k in node.keywords if k.arg == "identifier"), None)
        if ident is None and node.args and not isinstance(node.args[0], ast.Starred):
            ident = node.args[0]
        self._declaring = True  # an __init__'s parameters come from its class's callers, not super().__init__
        try:
            identifiers = self._patterns(ident, stack, 0) if ident is not None else None
        finally:
            self._declaring = False
        slot = _parent_slot(parent, ident)
        if slot is not None and len(slot) > MAX_PATTERN_CHARS:
            raise Refused(f"an identifier pattern longer than {MAX_PATTERN_CHARS:,} characters; not read")
        self._count(*(patterns or ()), *(identifiers or ()), slot or "")
        self.facts_.declarations.append(Declaration(patterns, version, node.lineno, self._text(parent), identifiers,
                                                    slot))

    def _step(self, cost: int = 1) -> None:  # -- bounds --
        self._steps += cost
        if self._steps > MAX_RESOLUTION_STEPS:
            raise Refused(f"its loader arguments take more than {MAX_RESOLUTION_STEPS:,} steps to bound; not read")

    def _count(self, *texts: str) -> None:
        self._fact_chars += sum(len(t) for t in texts)
        if self._fact_chars > MAX_FACT_CHARS:
            raise Refused(f"its facts (ids, loader arguments) exceed {MAX_FACT_CHARS:,} characters; not read")

    def _text(self, node: ast.AST) -> str:
        """A node's source for messages; unparsing is counted (a call nested in 200 is unparsed with each)."""
        self._step(unparse_cost(node, MAX_RESOLUTION_STEPS - self._steps + 1))
        text = _source(node)
        self._count(text)
        return text

    # -- argument resolution --------------------------------------------------------------------------------
    def _patterns(self, expr: ast.expr, stack: tuple[ast.AST, ...], depth: int) -> list[str] | None:
        if depth > MAX_DEPTH:
            return None
        key = (id(expr), depth, self._declaring, tuple(map(id, stack)))
        if key in self._memo:
            return self._memo[key]
        self._step()
        found = self._resolve(expr, stack, depth)
        result = None if found is None or len(found) > MAX_ALTERNATIVES else sorted(set(found))
        if result and max(map(len, result)) > MAX_PATTERN_CHARS:
            raise Refused(f"a loader argument longer than {MAX_PATTERN_CHARS:,} characters; not read")
        self._memo[key] = result
        return result

    def _resolve(self, expr: ast.expr, stack: tuple[ast.AST, ...], depth: int) -> list[str] | None:
        if isinstance(expr, ast.Constant):
            return [_escape(expr.value)] if isinstance(expr.value, str) else None
        if isinstance(expr, ast.JoinedStr):
            # each formatted name is resolved like any other argument; what cannot be becomes a wildcard
            combos = [""]
            for value in expr.values:
                options: list[str] | None = None
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    options = [_escape(value.value)]
                elif isinstance(value, ast.FormattedValue) and value.conversion in (-1, 115) \
                        and value.format_spec is None and isinstance(value.value, (ast.Name, ast.Constant)):
                    options = self._patterns(value.value, stack, depth + 1)
                if options is None or len(combos) * len(options) > MAX_ALTERNATIVES:
                    options = [WILDCARD]
                combos = [c + o for c in combos for o in options]
                _check_length(combos)
            return [WILDCARD_RUN.sub(WILDCARD, c) for c in combos]
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            left, right = self._patterns(expr.left, stack, depth + 1), self._patterns(expr.right, stack, depth + 1)
            if left is None or right is None or len(left) * len(right) > MAX_ALTERNATIVES:
                return None
            return _check_length([a + b for a in left for b in right])
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mod):
            left = self._patterns(expr.left, stack, depth + 1)
            if left is None:
                return None
            return [PERCENT_FIELD.sub(WILDCARD, p) for p in left]
        if isinstance(expr, ast.IfExp):
            body, orelse = self._patterns(expr.body, stack, depth + 1), self._patterns(expr.orelse, stack, depth + 1)
            return None if body is None or orelse is None else body + orelse
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
            inner = self._patterns(expr.func.value, stack, depth + 1)
            if inner is None:
                return None
            method = expr.func.attr
            if method == "format":
                return [_format_fields(p) for p in inner]
            if method in ("rstrip", "strip", "lower", "upper", "replace", "removesuffix", "lstrip",
                          "removeprefix", "title", "capitalize", "casefold"):
                # these may change any character; keep only what they cannot touch (nothing, for most)
                if method in ("rstrip", "removesuffix"):
                    return [_literal_prefix(p) + WILDCARD for p in inner]
                return None
            return None
        if isinstance(expr, ast.Name):
            return self._resolve_name(expr.id, stack, depth)
        return None

    def _resolve_name(self, name: str, stack: tuple[ast.AST, ...], depth: int) -> list[str] | None:
        for index in range(len(stack) - 1, -1, -1):
            func = stack[index]
            assert isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef))
            self._step()
            if name in self._signature(func)[1]:
                return self._resolve_param(func, name, depth)
            values, unreadable = self._local_bindings(func)
            if name in unreadable:
                return None  # bound by a loop, a with, an import... inside the function
            if name in values:
                return self._union(values[name], stack[:index + 1], depth)
        values = self.module_assigns.get(name)
        if values:
            return self._union(values, (), depth)
        return None

    def _union(self, exprs: list[ast.expr], stack: tuple[ast.AST, ...], depth: int) -> list[str] | None:
        out: list[str] = []
        for value in exprs:
            found = self._patterns(value, stack, depth + 1)
            if found is None:
                return None
            out.extend(found)
            if len(out) > MAX_ALTERNATIVES:
                return None  # more than _patterns keeps, whatever follows
        return out

    def _resolve_param(self, func: ast.FunctionDef | ast.AsyncFunctionDef, name: str, depth: int
                       ) -> list[str] | None:
        if func.name == "__init__" and self._declaring:
            return None  # its callers name the class; `super().__init__(...)` calls are another __init__
        sites = self.calls.get(func.name, [])
        if not sites:
            return None  # called from elsewhere: its callers are not in this file
        key = ("param", id(func), name, depth, self._declaring)
        if key in self._memo:
            return self._memo[key]
        positional, index_of, defaults, is_method = self._signature(func)
        out: list[str] | None = []
        for call in sites:
            self._step()
            keywords = self._keywords(call)
            if keywords is None:
                out = None
                break
            arg = keywords.get(name)
            if arg is None and name in index_of and index_of[name] < len(positional):
                index = index_of[name] - (1 if is_method and isinstance(call.func, ast.Attribute) else 0)
                if 0 <= index < len(call.args):
                    arg = call.args[index]
            if arg is None:
                arg = defaults.get(name)
            if arg is None:
                out = None
                break
            found = self._patterns(arg, self.stack_of.get(id(call), ()), depth + 1)
            if found is None:
                out = None
                break
            out.extend(found)
            if len(out) > MAX_ALTERNATIVES:
                out = None  # more than _patterns keeps, whatever the other sites pass
                break
        self._memo[key] = out
        return out

    def _signature(self, func: ast.FunctionDef | ast.AsyncFunctionDef
                   ) -> tuple[list[str], dict[str, int], dict[str, ast.expr], bool]:
        if id(func) not in self._signatures:
            self._signatures[id(func)] = signature(func)
        return self._signatures[id(func)]

    def _keywords(self, call: ast.Call) -> dict[str, ast.expr] | None:
        if id(call) not in self._call_keywords:
            self._step(1 + (len(call.args) + len(call.keywords)) // 100)
            self._call_keywords[id(call)] = call_keywords(call)
        return self._call_keywords[id(call)]

    def _local_bindings(self, func: ast.AST) -> tuple[dict[str, list[ast.expr]], set[str]]:
        """`local_bindings`, once per function."""
        found = self._locals.get(id(func))
        if found is None:
            found = self._locals[id(func)] = local_bindings(func)
            self._step(1 + len(found[0]) + len(found[1]))
        return found

    # -- the domain's own loaders ---------------------------------------------------------------------------
    def _loader_defs(self) -> None:
        """For a domain's `__init__.py`: which registry (or other loader, or plugin type) each `load_*` reads."""
        for node in self.tree.body:
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("load_")):
                continue
            registry = loader = plugin_type = None
            for sub in ast.walk(node):
                if isinstance(sub, ast.Subscript) and _registry_name(sub.value) and registry is None:
                    registry = _registry_name(sub.value)
                elif isinstance(sub, ast.Call):
                    name = _call_name(sub.func)
                    if name and name.startswith("load_") and name != node.name and loader is None:
                        loader = name
                    if name == "import_plugin" and len(sub.args) >= 2 and isinstance(sub.args[1], ast.Constant) \
                            and plugin_type is None:
                        plugin_type = str(sub.args[1].value)
            if registry:
                self.facts_.loader_defs[node.name] = "registry:" + registry
            elif loader:
                self.facts_.loader_defs[node.name] = "loader:" + loader
            elif plugin_type:
                self.facts_.loader_defs[node.name] = "type:" + plugin_type



def _parent_slot(parent: ast.expr, ident: ast.expr | None) -> str | None:
    """For `parent=name` and an f-string identifier that contains `{name}` once: the identifier as a regular
    expression with that slot as group `parent` (a word: V1, IT, behavior), the rest as wildcards."""
    if not isinstance(parent, ast.Name) or not isinstance(ident, ast.JoinedStr):
        return None
    parts, slots = [], 0
    for value in ident.values:
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            parts.append(re.escape(value.value))
        elif isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name) \
                and value.value.id == parent.id and value.format_spec is None:
            parts.append(r"(?P<parent>[A-Za-z0-9_]+)")
            slots += 1
        else:
            parts.append(".*?")
    return "".join(parts) if slots == 1 else None
