"""The values a construction walk deals in (`pipeline.catalog.walker`): text and numbers as they are, references
to the functions, classes and modules read, what cannot be known (with why), lazily bound arguments, and the
terminal calls a walk ends at; with the bounded operations on text it may apply (f-strings, `+`, `==`, str methods).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline import bigints

MAX_STEPS = 20_000  # per registered id
MAX_FOLDER_STEPS = 100_000  # per benchmark folder, all its ids together (vision's largest takes 720)
MAX_FRAMES = 24  # calls followed one inside another
MAX_ALTS = 64  # possible values of one expression
MAX_TEXT = 4000
STR_METHODS = {"format", "replace", "lower", "upper", "strip", "lstrip", "rstrip", "removeprefix", "removesuffix",
               "title", "capitalize", "split", "rsplit", "join"}
BASE_CLASSES = {"BenchmarkBase"}  # brainscore_core's base: parent defaults to None


@dataclass(frozen=True)
class Unknown:
    why: str


@dataclass(frozen=True)
class Ref:
    kind: str  # "fn", "cl", "mod"
    path: str
    name: str = ""


@dataclass
class Kwargs:
    items: dict  # name -> Thunk


Alt = tuple[Any, frozenset]  # a possible value, and the loop choices it assumes


class TooDeep(Exception):
    pass


@dataclass
class Frame:
    path: str  # the module file
    fn: dict | None  # the function's facts (None: module level or a lambda)
    binds: dict = field(default_factory=dict)  # parameter -> Thunk
    key: str = ""  # names this frame's loop choices
    busy: set = field(default_factory=set)  # names being evaluated (a self-reference reads the parameter)


@dataclass
class Thunk:
    ir: list
    frame: Frame
    memo: list | None = None


@dataclass
class Terminal:
    """The call that decides: it passes `parent=` (kind 'kw'), or reaches brainscore_core's base without one
    ('base'), or a callee that cannot be followed ('opaque'); 'unknown' when the way there cannot be read."""
    kind: str
    frame: Frame | None = None
    call: list | None = None
    kwargs: dict = field(default_factory=dict)  # from `**kwargs` expansions: name -> Thunk
    callee: str = ""
    why: str = ""


@dataclass
class Reading:
    parent: str | None = None
    read: bool = False  # False: unknown (see why)
    why: str = ""
    identifier: str | None = None  # the runtime identifier, when one value
    version: int | None = None


def ir_text(ir: Any) -> str:
    """A short source-like text of an IR expression, for messages."""
    if not isinstance(ir, list) or not ir:
        return "?"
    tag = ir[0]
    if tag == "s":
        return repr(ir[1])
    if tag in ("n", "i", "b"):
        return "None" if tag == "n" else bigints.shown(ir[1])
    if tag == "v":
        return ir[1]
    if tag == "a":
        return f"{ir_text(ir[1])}.{ir[2]}"
    if tag == "c":
        args = [ir_text(a) for a in ir[2]] + [f"{k}={ir_text(v)}" if k else f"**{ir_text(v)}" for k, v in ir[3]]
        text = f"{ir_text(ir[1])}({', '.join(args)})"
        return text if len(text) < 100 else text[:97] + "..."
    if tag == "f":
        return "f'" + "".join(p[1] if p[0] == "s" else "{" + ir_text(p) + "}" for p in ir[1]) + "'"
    if tag == "?":
        return ir[1]
    if tag == "[":
        return f"{ir_text(ir[1])}[{ir_text(ir[2])}]"
    if tag == "or":
        return " or ".join(ir_text(v) for v in ir[1])
    if tag == "+":
        return f"{ir_text(ir[1])} + {ir_text(ir[2])}"
    return "<expression>"


def _keywords(call: list) -> dict:
    return {k: v for k, v in call[3] if k is not None}


def _fmt(value: Any) -> str:
    if isinstance(value, Unknown):
        return ""
    if value is None or isinstance(value, (str, int, bool)):
        return bigints.shown(value) if bigints.too_large(value) else str(value)
    return "<object>"


def _text(value: str) -> Any:
    return value if len(value) <= MAX_TEXT else Unknown("text too long")


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, str) and isinstance(b, str):
        return _text(a + b)
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) + len(b) <= MAX_ALTS:
        return a + b
    return Unknown("+ of values that are not both text")


def _compare(op: str, left: Any, right: Any) -> Any:
    plain = (str, int, bool, type(None))
    if isinstance(left, plain) and isinstance(right, plain):
        return (left == right) if op == "==" else (left != right)
    return Unknown("a comparison of values made at run time")


def _index(value: Any, index: Any) -> Any:
    if isinstance(value, tuple) and isinstance(index, int) and not isinstance(index, bool) \
            and -len(value) <= index < len(value):
        return value[index]
    return Unknown("an item of a value made at run time")


def _has_format_spec(text: str) -> bool:
    """Whether a `{` field of `text` holds `:` or `!` before its `}` (what `re.search(r"\\{[^}]*[:!]")` finds, in
    one pass: that expression backtracks quadratically over a text of many `{`)."""
    start = text.find("{")
    while start >= 0:
        end = text.find("}", start)
        field = text[start:end] if end >= 0 else text[start:]
        if ":" in field or "!" in field:
            return True
        if end < 0:
            return False
        start = text.find("{", end)
    return False


def _str_method(method: str, base: Any, args: list, ir: list) -> Any:
    """A str method on text with text arguments, bounded (no padding widths, no blow-up)."""
    if not isinstance(base, str) or any(not isinstance(a, (str, int)) or isinstance(a, bool) for a in args) or \
            ir[3]:
        if method == "join" and isinstance(base, str) and len(args) == 1 and isinstance(args[0], tuple) and \
                all(isinstance(a, str) for a in args[0]):
            return _text(base.join(args[0]))
        return Unknown(f"{ir_text(ir)} works on a value made at run time")
    if method == "format" and _has_format_spec(base):
        return Unknown(f"{ir_text(ir)} uses format specifications")
    if method == "format" and base.count("{") * max((len(str(a)) for a in args), default=0) > 100_000:
        return Unknown("text too long")
    if method == "replace" and len(args) >= 2 and isinstance(args[1], str) and \
            len(base) * (len(args[1]) + 1) > 100_000:
        return Unknown("text too long")
    try:
        result = getattr(base, method)(*args)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        return Unknown(f"{ir_text(ir)} fails ({exc.__class__.__name__})")
    if isinstance(result, list):
        return tuple(result) if len(result) <= MAX_ALTS else Unknown("too many items")
    return _text(result) if isinstance(result, str) else Unknown(f"{ir_text(ir)} is not text")
