"""YAML written by submitters (a plugin's `environment.yml`, `metadata.yml`), read in time and memory linear in its
size: libyaml's C parser where PyYAML has it (ten times the pure-Python one), the safe constructor, and no aliases.

An alias is cheap to load but makes a graph whose expansion is exponential: nine levels of nine aliases are 475
bytes and gigabytes once formatted, compared or walked as a tree (issue 35). No plugin metadata or environment
file of Brain-Score's repositories uses one, so a document with an alias is refused; libyaml itself refuses nesting
deeper than 1000 levels. An integer of more than 100 digits is refused too (`pipeline.bigints`: a hexadecimal one
is read whatever its length, and then breaks whatever prints it). Every failure is `Refused` or a `yaml.YAMLError`
with a short message, never another exception (a deep document is a RecursionError in the pure loader)."""

from __future__ import annotations

from typing import Any

import yaml

from pipeline import bigints

_Base: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
C_LOADER = _Base is not yaml.SafeLoader


class Refused(ValueError):
    """The text is over one of our bounds (an alias): refused whatever else it holds."""


def _no_alias(base: type) -> type:
    class NoAliasLoader(base):  # type: ignore[misc, valid-type]
        """The safe loader that refuses a document in which a node is reached twice (an alias, a merge key)."""

        def construct_document(self, node: yaml.Node) -> Any:
            _refuse_shared_nodes(node)
            return super().construct_document(node)

    NoAliasLoader.add_constructor("tag:yaml.org,2002:int", _bounded_int)
    return NoAliasLoader


def _bounded_int(loader: yaml.constructor.SafeConstructor, node: yaml.ScalarNode) -> int:
    """An integer scalar, refused (`bigints`) when it is longer than 100 digits: its text is measured before it is
    converted (a conversion of 5000 decimal digits is a ValueError, of a million hexadecimal ones a long wait)."""
    if len(node.value) > bigints.MAX_INT_TEXT:
        raise Refused(bigints.REASON)
    value = yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)
    if bigints.too_large(value):
        raise Refused(bigints.REASON)
    return value


_FAST = _no_alias(_Base)
_PURE = _no_alias(yaml.SafeLoader)


def _refuse_shared_nodes(root: yaml.Node) -> None:
    seen: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            raise Refused("YAML aliases are not accepted (an alias can expand a small file to gigabytes)")
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            todo.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                todo.append(key)
                todo.append(value)


def load(text: str) -> Any:
    """The one document of `text` as plain Python data (dict, list, str, int, float, bool, None, dates).

    Refused: over a bound (an alias, an integer of more than 100 digits). yaml.YAMLError: not valid YAML, with the
    message of PyYAML's pure-Python loader (the text is read again by it on this rare path, so that messages stay
    those users have seen), or a value Python cannot hold."""
    try:
        return yaml.load(text, Loader=_FAST)  # noqa: S506 - a safe loader, see above
    except Refused:
        raise
    except yaml.YAMLError as fast_error:
        if not C_LOADER:
            raise
        try:
            yaml.load(text, Loader=_PURE)  # noqa: S506
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, RecursionError, MemoryError, OverflowError):
            pass
        raise fast_error from None
    except (ValueError, TypeError, RecursionError, MemoryError, OverflowError) as exc:
        raise yaml.YAMLError(f"{type(exc).__name__}: {str(exc)[:160]}") from None


def shown(value: Any, limit: int = 300) -> str:
    """`repr(value)` of plain data from a document, cut at `limit` characters and never built further: the same
    text as `repr` when that is short, without formatting the whole of a large value to show its start."""
    out: list[str] = []
    size = 0
    todo: list[tuple[bool, Any]] = [(False, value)]  # (is literal text, item)
    while todo and size <= limit:
        literal, item = todo.pop()
        if literal:
            text = item
        elif isinstance(item, list) and item:
            todo.append((True, "]"))
            for i in range(len(item) - 1, -1, -1):
                todo.append((False, item[i]))
                if i:
                    todo.append((True, ", "))
            text = "["
        elif isinstance(item, dict) and item:
            todo.append((True, "}"))
            pairs = list(item.items())
            for i in range(len(pairs) - 1, -1, -1):
                todo.append((False, pairs[i][1]))
                todo.append((True, ": "))
                todo.append((False, pairs[i][0]))
                if i:
                    todo.append((True, ", "))
            text = "{"
        elif isinstance(item, (str, bytes)) and len(item) > limit:
            text = repr(item[:limit + 1])
        else:
            try:
                text = repr(item)
            except ValueError:  # an integer too long for Python to print
                text = f"<{type(item).__name__}>"
        out.append(text)
        size += len(text)
    whole = "".join(out)
    return whole if not todo and len(whole) <= limit else whole[:limit - 3] + "..."
