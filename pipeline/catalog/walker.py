"""A bounded walk over construction facts (`pipeline.catalog.construction`): from a registry value through the
functions, classes and `super().__init__` calls it reaches, binding parameters lazily to what each call passes,
to the call that passes `parent=` (or the base class that defaults it). Nothing runs; steps, call depth and the
number of possible values are capped, and what cannot be followed becomes an `Unknown` with its reason."""

from __future__ import annotations

from typing import Any, Callable

from pipeline import bigints
from pipeline.catalog.walker_values import (BASE_CLASSES, MAX_ALTS, MAX_FRAMES, MAX_STEPS, STR_METHODS, Alt, Frame,
                                            Kwargs, Reading, Ref, Terminal, Thunk, TooDeep, Unknown, _add, _compare,
                                            _fmt, _index, _keywords, _str_method, _text, ir_text)


class Walker:
    """Follows constructions over the construction facts of the files read (`modules`: path -> facts)."""

    def __init__(self, root: str, modules: dict[str, dict]):
        self.root = root
        self.modules = modules
        self.steps = 0

    # -- modules and names ----------------------------------------------------------------------------------
    def module_file(self, dotted: str) -> str | None:
        base = dotted.replace(".", "/")
        for path in (f"{base}.py", f"{base}/__init__.py"):
            if path in self.modules:
                return path
        return None

    def _dotted(self, path: str, level: int, module: str) -> str:
        if not level:
            return module
        package = path.split("/")[:-1]
        base = package[:max(len(package) - (level - 1), 0)]
        return ".".join(base + ([module] if module else []))

    def lookup(self, path: str, name: str, seen: frozenset = frozenset()) -> list[Alt]:
        """A module-level name of `path`: constant, function, class or imported name."""
        if (path, name) in seen or len(seen) > 8:
            return [(Unknown(f"{name} is imported in a circle"), frozenset())]
        facts = self.modules.get(path)
        if facts is None:
            return [(Unknown(f"{path} is not read"), frozenset())]
        if name in facts["fn"]:
            return [(Ref("fn", path, name), frozenset())]
        if name in facts["cl"]:
            return [(Ref("cl", path, name), frozenset())]
        module_frame = Frame(path, None, key=path)
        if name in facts["as"]:
            return self.union([Thunk(v, module_frame) for v in facts["as"][name]])
        if name in facts["lp"]:
            return self.loop(facts["lp"][name], module_frame, name)
        if name in facts["im"]:
            level, module, attr = facts["im"][name]
            dotted = self._dotted(path, level, module)
            if attr is None:
                target = self.module_file(dotted)
                return [(Ref("mod", target) if target else Unknown(f"module {dotted} is not in the repository"),
                         frozenset())]
            sub = self.module_file(f"{dotted}.{attr}" if dotted else attr)
            if sub:
                return [(Ref("mod", sub), frozenset())]
            target = self.module_file(dotted)
            if target is None:
                where = "outside the repository" if dotted.split(".")[0] != self.root else "not read"
                return [(Unknown(f"{name} is imported from {dotted} ({where})"), frozenset())]
            return self.lookup(target, attr, seen | {(path, name)})
        if name in ("None", "True", "False"):
            return [({"None": None, "True": True, "False": False}[name], frozenset())]
        return [(Unknown(f"{name} is not defined by name in {path.rsplit('/', 1)[-1]}"), frozenset())]

    def name(self, name: str, frame: Frame) -> list[Alt]:
        fn = frame.fn
        if fn is not None and name in fn.get("as", {}) and name not in frame.busy:
            frame.busy.add(name)
            try:
                return self.union([Thunk(v, frame) for v in fn["as"][name]])
            finally:
                frame.busy.discard(name)
        if name in frame.binds:
            return self.force(frame.binds[name])
        if fn is not None and name in fn.get("lp", {}):
            return self.loop(fn["lp"][name], frame, name)
        if fn is not None and fn.get("cut"):
            return [(Unknown(f"the function at line {fn['line']} is too large to read"), frozenset())]
        return self.lookup(frame.path, name)

    def loop(self, iterable: list, frame: Frame, name: str) -> list[Alt]:
        """A loop variable over a literal list: one alternative per item, each assuming its choice."""
        items = self.eval(iterable, frame)
        if len(items) == 1 and isinstance(items[0][0], tuple):
            key = f"{frame.key}:{name}"
            out = []
            for index, item in enumerate(items[0][0]):
                if isinstance(item, Unknown):
                    return [(item, frozenset())]
                out.append((item, items[0][1] | {(key, index)}))
            return out or [(Unknown(f"{name} loops over nothing"), frozenset())]
        return [(Unknown(f"{name} is bound by a loop over {ir_text(iterable)}"), frozenset())]

    # -- values ---------------------------------------------------------------------------------------------
    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TooDeep(f"more than {MAX_STEPS} steps to follow")

    def force(self, thunk: Thunk) -> list[Alt]:
        if thunk.memo is None:
            thunk.memo = self.eval(thunk.ir, thunk.frame)
        return thunk.memo

    def union(self, thunks: list[Thunk]) -> list[Alt]:
        out: list[Alt] = []
        for thunk in thunks:
            out.extend(self.force(thunk))
        return self.cap(out)

    @staticmethod
    def cap(alts: list[Alt]) -> list[Alt]:
        unique = list(dict.fromkeys(alts))
        if len(unique) > MAX_ALTS:
            return [(Unknown(f"more than {MAX_ALTS} possible values"), frozenset())]
        return unique

    def combine(self, parts: list[list[Alt]], join: Callable[[list], Any]) -> list[Alt]:
        """Every consistent choice of one alternative per part (a loop variable takes one value at a time)."""
        combos: list[tuple[list, frozenset]] = [([], frozenset())]
        for alts in parts:
            nxt = []
            for values, assumed in combos:
                for value, more in alts:
                    merged = assumed | more
                    if len({k for k, _ in merged}) == len(merged):  # no variable with two values
                        nxt.append((values + [value], merged))
            combos = nxt
            if len(combos) > MAX_ALTS:
                return [(Unknown(f"more than {MAX_ALTS} possible values"), frozenset())]
        out = []
        for values, assumed in combos:
            bad = next((v for v in values if isinstance(v, Unknown)), None)
            out.append((bad if bad is not None else join(values), assumed))
        return self.cap(out)

    def eval(self, ir: list, frame: Frame) -> list[Alt]:
        self.tick()
        tag = ir[0]
        if tag == "s":
            return [(ir[1], frozenset())]
        if tag == "n":
            return [(None, frozenset())]
        if tag in ("i", "b"):  # an integer over the reading bound (`bigints`) is no value a walk can use or print
            return [(Unknown(bigints.REASON.split(";")[0]) if bigints.too_large(ir[1]) else ir[1], frozenset())]
        if tag == "v":
            return self.name(ir[1], frame)
        if tag == "f":
            parts = [self.eval(p, frame) for p in ir[1]]
            return self.combine(parts, lambda vs: _text("".join(_fmt(v) for v in vs)))
        if tag == "+":
            return self.combine([self.eval(ir[1], frame), self.eval(ir[2], frame)], lambda vs: _add(*vs))
        if tag == "or":
            out: list[Alt] = []
            for value, assumed in self.eval(ir[1][0], frame):
                if isinstance(value, Unknown) or value or len(ir[1]) == 1:
                    out.append((value, assumed))
                else:
                    rest = self.eval(["or", ir[1][1:]], frame)
                    out.extend((v, assumed | a) for v, a in rest)
            return self.cap(out)
        if tag == "if":
            out = []
            for test, assumed in (self.eval(ir[3], frame) if len(ir) > 3 else [(Unknown("?"), frozenset())]):
                branches = [ir[1]] if test is True else [ir[2]] if test is False else [ir[1], ir[2]]
                for branch in branches:
                    out.extend((v, assumed | a) for v, a in self.eval(branch, frame))
            return self.cap(out)
        if tag in ("==", "!="):
            return self.combine([self.eval(ir[1], frame), self.eval(ir[2], frame)],
                                lambda vs: _compare(tag, *vs))
        if tag == "l":
            return self.combine([self.eval(e, frame) for e in ir[1]], tuple)
        if tag == "[":
            return self.combine([self.eval(ir[1], frame), self.eval(ir[2], frame)], lambda vs: _index(*vs))
        if tag == "a":
            fn = frame.fn
            if fn is not None and ir[1][0] == "v" and fn["p"] and ir[1][1] == fn["p"][0] and \
                    ir[2] in fn.get("sa", {}) and ir[1][1] not in fn.get("as", {}):
                return self.union([Thunk(v, frame) for v in fn["sa"][ir[2]]])  # self.x set earlier in __init__
            return self.combine([self.eval(ir[1], frame)], lambda vs: self.attribute(vs[0], ir[2], ir))
        if tag == "c":
            return self.call_value(ir, frame)
        if tag == "L":
            return [(Unknown(f"{ir_text(ir)} is a function"), frozenset())]
        return [(Unknown(f"{ir_text(ir)} cannot be read statically"), frozenset())]

    def attribute(self, base: Any, attr: str, ir: list) -> Any:
        if isinstance(base, Ref) and base.kind == "mod":
            alts = self.lookup(base.path, attr)
            return alts[0][0] if len(alts) == 1 else Unknown(f"{ir_text(ir)} has several values")
        if isinstance(base, Ref) and base.kind == "cl":
            attrs = self.modules[base.path]["cl"][base.name]["at"]
            if attr in attrs and len(attrs[attr]) == 1:
                alts = self.eval(attrs[attr][0], Frame(base.path, None, key=base.path))
                return alts[0][0] if len(alts) == 1 else Unknown(f"{ir_text(ir)} has several values")
        if isinstance(base, Unknown):
            return base
        return Unknown(f"{ir_text(ir)} reads an attribute of a value made at run time")

    def call_value(self, ir: list, frame: Frame) -> list[Alt]:
        """What a call returns, where it can be read: a function's returns, `getattr`, str methods."""
        func = ir[1]
        if func[0] == "v" and func[1] == "getattr" and len(ir[2]) == 2:
            return self.combine([self.eval(ir[2][0], frame), self.eval(ir[2][1], frame)],
                                lambda vs: self.attribute(vs[0], vs[1], ir) if isinstance(vs[1], str)
                                else Unknown(f"{ir_text(ir)}: the name is not text"))
        if func[0] == "v" and func[1] == "str" and len(ir[2]) == 1:
            return self.combine([self.eval(ir[2][0], frame)],
                                lambda vs: vs[0] if isinstance(vs[0], str) else Unknown(f"{ir_text(ir)}"))
        if func[0] == "a" and func[2] in STR_METHODS:
            parts = [self.eval(func[1], frame)] + [self.eval(a, frame) for a in ir[2]]
            return self.combine(parts, lambda vs: _str_method(func[2], vs[0], vs[1:], ir))
        callee = self.eval(func, frame)
        out: list[Alt] = []
        for value, assumed in callee:
            if isinstance(value, Ref) and value.kind == "fn":
                fn = self.modules[value.path]["fn"][value.name]
                inner = self.enter(fn, value.path, ir, frame)
                if isinstance(inner, Unknown):
                    out.append((inner, assumed))
                    continue
                if not fn["r"]:
                    out.append((Unknown(f"{value.name}() returns nothing readable"), assumed))
                for ret in fn["r"]:
                    out.extend((v, assumed | a) for v, a in self.eval(ret, inner))
            else:
                why = value.why if isinstance(value, Unknown) else f"{ir_text(ir)} is made at run time"
                out.append((Unknown(why), assumed))
        return self.cap(out)

    def enter(self, fn: dict, path: str, call: list, frame: Frame, skip_self: bool = False) -> Frame | Unknown:
        """A frame for `fn` with its parameters bound to what `call` passes (lazily), or why not."""
        if len(frame.key.split("|")) > MAX_FRAMES:
            raise TooDeep(f"more than {MAX_FRAMES} calls deep")
        params = list(fn["p"])
        if skip_self and params:
            params = params[1:]
        binds: dict[str, Thunk] = {}
        extra: dict[str, Thunk] = {}
        for index, arg in enumerate(call[2]):
            if arg[0] == "*":
                return Unknown(f"{ir_text(call)} passes *arguments")
            if index < len(params):
                binds[params[index]] = Thunk(arg, frame)
        for key, value in call[3]:
            if key is None:
                for name, alts in ((n, t) for n, t in self._expand(value, frame).items()):
                    (binds if name in params else extra)[name] = alts
                continue
            (binds if key in params else extra)[key] = Thunk(value, frame)
        defaults_frame = Frame(path, None, key=path)
        for name, default in fn["d"].items():
            binds.setdefault(name, Thunk(default, defaults_frame))
        if fn.get("kw"):
            binds[fn["kw"]] = Thunk(["?", "**"], frame, memo=[(Kwargs(extra), frozenset())])
        return Frame(path, fn, binds, key=f"{frame.key}|{path}:{fn['line']}")

    def _expand(self, ir: list, frame: Frame) -> dict[str, Thunk]:
        alts = self.eval(ir, frame)
        if len(alts) == 1 and isinstance(alts[0][0], Kwargs):
            return dict(alts[0][0].items)
        return {}

    # -- constructions --------------------------------------------------------------------------------------
    def construct(self, ir: list, frame: Frame) -> list[Terminal]:
        """The terminal calls a registry value reaches (a lambda, a function or class named, a call)."""
        self.tick()
        tag = ir[0]
        if tag == "L":
            binds = {p: Thunk(d, frame) for p, d in ir[2].items()}
            return self.construct(ir[3], Frame(frame.path, None, binds, key=frame.key + "|λ"))
        if tag == "c":
            return self.construct_call(ir, frame)
        if tag in ("v", "a"):
            if tag == "v" and frame.fn is not None and ir[1] in frame.fn.get("as", {}) and ir[1] not in frame.busy:
                frame.busy.add(ir[1])
                try:
                    return [t for v in frame.fn["as"][ir[1]] for t in self.construct(v, frame)]
                finally:
                    frame.busy.discard(ir[1])
            if tag == "v" and ir[1] in frame.binds:
                thunk = frame.binds[ir[1]]
                return self.construct(thunk.ir, thunk.frame)
            return self.construct_call(["c", ir, [], []], frame)
        return [Terminal("unknown", why=f"{ir_text(ir)} is not a benchmark construction that can be followed")]

    def construct_call(self, call: list, frame: Frame) -> list[Terminal]:
        here = _keywords(call)
        callee = self.eval(call[1], frame)  # getattr(module, "name")(...) too: a call's value is the callee
        deeper: list[Terminal] = []
        for value, _ in callee:
            if isinstance(value, Ref) and value.kind == "fn":
                fn = self.modules[value.path]["fn"][value.name]
                inner = self.enter(fn, value.path, call, frame)
                if isinstance(inner, Unknown):
                    deeper.append(Terminal("unknown", why=inner.why))
                elif fn.get("gen"):
                    deeper.append(Terminal("unknown", why=f"{value.name}() yields its benchmarks"))
                elif not fn["r"]:
                    deeper.append(Terminal("unknown", why=f"{value.name}() returns nothing readable"))
                else:
                    for ret in fn["r"]:
                        deeper.extend(self.construct(ret, inner))
            elif isinstance(value, Ref) and value.kind == "cl":
                deeper.extend(self.construct_class(value, call, frame))
            elif isinstance(value, Unknown):
                deeper.append(Terminal("opaque", frame, call, callee=ir_text(call[1]), why=value.why))
            else:
                deeper.append(Terminal("opaque", frame, call, callee=ir_text(call[1]),
                                       why=f"{ir_text(call[1])} cannot be followed"))
        decided = [t for t in deeper if t.kind in ("kw", "unknown")]
        if decided:
            return decided
        kwargs: dict = {}
        for key, value in call[3]:
            if key is None:
                kwargs.update(self._expand(value, frame))
        if "parent" in here or "parent" in kwargs:
            return [Terminal("kw", frame, call, kwargs, callee=ir_text(call[1]))]
        return deeper

    def construct_class(self, cls: Ref, call: list, frame: Frame) -> list[Terminal]:
        """A class's construction: its `__init__` (its own or a base's it inherits), then the base `__init__`
        calls in it (`super().__init__(...)`, `Base.__init__(self, ...)`)."""
        owner, init = self._init_of(cls)
        if init is None:
            base = self._first_base_name(cls)
            kind = "base" if base in BASE_CLASSES else "opaque"
            return [Terminal(kind, frame, call, callee=cls.name, why=f"{cls.name} has no __init__ that can be read")]
        inner = self.enter(init, owner.path, call, frame, skip_self=True)
        if isinstance(inner, Unknown):
            return [Terminal("unknown", why=inner.why)]
        if not init["sc"]:
            return [Terminal("opaque", frame, call, callee=cls.name,
                             why=f"{owner.name}.__init__ passes nothing to a base class")]
        out: list[Terminal] = []
        for sc in init["sc"]:
            target = sc[1][1]
            explicit = target[0] != "c"  # Base.__init__(self, ...): the base is named, self passed first
            if explicit:
                bases = self.eval(target, inner)
                base = bases[0][0] if len(bases) == 1 else None
                sc = [sc[0], sc[1], sc[2][1:], sc[3]]
            else:
                base = self._base_of(owner)
            if isinstance(base, Ref) and base.kind == "cl":
                out.extend(self._construct_super(base, sc, inner))
            else:
                name = ir_text(target) if explicit else self._first_base_name(owner)
                kwargs = {}
                for key, value in sc[3]:
                    if key is None:
                        kwargs.update(self._expand(value, inner))
                has = "parent" in _keywords(sc) or "parent" in kwargs
                kind = "kw" if has else "base" if name in BASE_CLASSES else "opaque"
                out.append(Terminal(kind, inner, sc, kwargs, callee=name,
                                    why="" if has else f"no parent= reaches {name}, defined outside what is read"))
        return out

    def _construct_super(self, base: Ref, sc: list, frame: Frame) -> list[Terminal]:
        deeper = self.construct_class(base, ["c", ["v", base.name], sc[2], sc[3]], frame)
        if any(t.kind in ("kw", "unknown") for t in deeper):
            return [t for t in deeper if t.kind in ("kw", "unknown")]
        kwargs = {}
        for key, value in sc[3]:
            if key is None:
                kwargs.update(self._expand(value, frame))
        if "parent" in _keywords(sc) or "parent" in kwargs:
            return [Terminal("kw", frame, sc, kwargs, callee=base.name)]
        return deeper

    def _init_of(self, cls: Ref, seen: frozenset = frozenset()) -> tuple[Ref, dict | None]:
        facts = self.modules[cls.path]["cl"][cls.name]
        if facts["i"] is not None or cls in seen:
            return cls, facts["i"]
        base = self._base_of(cls)
        if isinstance(base, Ref) and base.kind == "cl":
            return self._init_of(base, seen | {cls})
        return cls, None

    def _base_of(self, cls: Ref) -> Any:
        bases = self.modules[cls.path]["cl"][cls.name]["b"]
        if not bases:
            return None
        alts = self.eval(bases[0], Frame(cls.path, None, key=cls.path))
        return alts[0][0] if len(alts) == 1 else None

    def _first_base_name(self, cls: Ref) -> str:
        bases = self.modules[cls.path]["cl"][cls.name]["b"]
        if not bases:
            return "object"
        return ir_text(bases[0]).rsplit(".", 1)[-1]

    # -- reading a terminal ---------------------------------------------------------------------------------
    def read(self, terminals: list[Terminal], registered: str) -> Reading:
        """One parent (and identifier, version) from the terminal calls, or why not. The identifier is read
        even when the parent is not (the runtime identifier of a benchmark hung by hand is still useful)."""
        combos: list[tuple[Any, Any, Any]] = []
        why = ""
        for t in terminals:
            if t.kind == "unknown":
                why = why or t.why
                continue
            kw = dict(_keywords(t.call or ["c", None, [], []]))
            if t.kind == "opaque":
                why = why or (f"no parent= on the way to {t.callee}: {t.why}" if t.why else
                              f"no parent= on the way to {t.callee}, which cannot be followed")
                parent = [(Unknown(why), frozenset())]
            else:
                parent = self._kw(t, kw, "parent") if t.kind == "kw" else [(None, frozenset())]
            ident = self._kw(t, kw, "identifier") if ("identifier" in kw or "identifier" in t.kwargs) else \
                [(self._first_arg(t), frozenset())]
            version = self._kw(t, kw, "version") if ("version" in kw or "version" in t.kwargs) else \
                [(None, frozenset())]
            for (p, pa), (i, ia), (v, va) in ((p, i, v) for p in parent for i in ident for v in version):
                assumed = pa | ia | va
                if len({k for k, _ in assumed}) == len(assumed):
                    combos.append((p, i, v))
        idents = {i for _, i, _ in combos if isinstance(i, str)}
        identifier = idents.pop() if len(idents) == 1 else registered if registered in idents else None
        if why or not combos:
            return Reading(why=why or "no consistent value", identifier=identifier)
        bad = [p for p, _, _ in combos if isinstance(p, Unknown)]
        if bad:
            text = bad[0].why
            return Reading(why=text if text.startswith(("parent", "no parent")) else f"parent={text}",
                           identifier=identifier)
        wrong = [p for p, _, _ in combos if p is not None and not isinstance(p, str)]
        if wrong:
            return Reading(why=f"parent= is {type(wrong[0]).__name__}, not text", identifier=identifier)
        parents = {p for p, _, _ in combos}
        if len(parents) > 1:
            mine = {p for p, i, _ in combos if i == registered}
            if len(mine) == 1:
                parents = mine
                combos = [c for c in combos if c[0] in mine]
            else:
                shown = ", ".join(repr(p) for p in sorted(parents, key=str)[:6])
                return Reading(why=f"parent= is passed several ways ({shown}) and the construction does not say "
                               "which", identifier=identifier)
        parent = parents.pop()
        idents = {i for p, i, _ in combos if isinstance(i, str)}
        versions = {v for _, _, v in combos if isinstance(v, int) and not isinstance(v, bool)}
        return Reading(parent=parent, read=True, identifier=idents.pop() if len(idents) == 1 else identifier,
                       version=versions.pop() if len(versions) == 1 else None)

    def _kw(self, t: Terminal, kw: dict, name: str) -> list[Alt]:
        if name in kw:
            alts = self.eval(kw[name], t.frame)
        else:
            alts = self.force(t.kwargs[name])
        src = ir_text(kw[name]) if name in kw else f"**kwargs[{name!r}]"
        return [(Unknown(f"{src}: {v.why}") if isinstance(v, Unknown) and name == "parent" else v, a)
                for v, a in alts]

    def _first_arg(self, t: Terminal) -> Any:
        """A constructor's identifier passed first, by position (BenchmarkBase(identifier, ...))."""
        if t.call and t.call[2] and t.call[2][0][0] != "*":
            alts = self.eval(t.call[2][0], t.frame)
            return alts[0][0] if len(alts) == 1 else None
        return None
