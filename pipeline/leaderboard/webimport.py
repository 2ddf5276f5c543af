"""`score-plugins hierarchy import DUMP --out FILE`: a hierarchy file (the `hierarchy` setting's shape) from a dump
of brain-score.org's benchmark-type table (`brainscore_benchmarktype`: identifier, domain, parent, visible, order),
so a board follows the website's own tree and visibility. Read: Django's `dumpdata`/fixture JSON (the website's
benchmarks/fixtures/fixture-benchmarktypes.json shape), a JSON list of rows, or `psql \\copy ... CSV HEADER`.
Nodes with children become [D.parents]; leaves become [D.place] (the website's parent wins over the plugin's);
every row's flag and order go to [D.visible] and [D.order]. The file is written whole or not at all."""

from __future__ import annotations

import csv
import io
import json
import tomllib
from pathlib import Path

from pipeline import safe_yaml
from pipeline.atomic import write_atomically
from pipeline.catalog.ids import identifier_problem
from pipeline.errors import BadInput

MAX_BYTES = 64 * 2**20
MAX_ROWS = 200_000
MIN_ORDER, MAX_ORDER = -2**31, 2**31 - 1  # brain-score.org's `order` is a Django IntegerField
TRUE = {"true", "t", "1", "yes", "y"}
FALSE = {"false", "f", "0", "no", "n", ""}


def _shown(value: object) -> str:
    """A value of the dump for a one-line message: its repr, cut short (a field may be 100,000 characters)."""
    return safe_yaml.shown(value, 80)


def _flag(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, str)) and str(value).strip().lower() in TRUE | FALSE:
        return str(value).strip().lower() in TRUE
    raise BadInput(f"{where}: visible is {_shown(value)}, not true or false")


def _rows(path: Path) -> list[dict]:
    try:
        if path.stat().st_size > MAX_BYTES:
            raise BadInput(f"{path}: over {MAX_BYTES // 2**20} MiB; dump the benchmark-type table only")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot be read ({exc.__class__.__name__})") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BadInput(f"{path}: not JSON ({str(exc)[:200]})") from None
        except RecursionError:
            raise BadInput(f"{path}: not JSON that can be read (nested too deeply)") from None
        rows = []
        for item in data:
            if not isinstance(item, dict):
                raise BadInput(f"{path}: every item must be an object")
            if "fields" in item:  # Django: {"model": "benchmarks.benchmarktype", "pk": ..., "fields": {...}}
                if not str(item.get("model", "")).lower().endswith("benchmarktype"):
                    continue
                fields = dict(item["fields"]) if isinstance(item["fields"], dict) else {}
                fields.setdefault("identifier", item.get("pk"))
                rows.append(fields)
            else:
                rows.append(item)
    else:
        try:
            rows = list(csv.DictReader(io.StringIO(text)))
        except csv.Error as exc:  # a field over the csv module's limit (131072 characters), a NUL
            raise BadInput(f"{path}: not CSV that can be read ({str(exc)[:200]})") from None
    if len(rows) > MAX_ROWS:
        raise BadInput(f"{path}: more than {MAX_ROWS} rows")
    return rows


def read_dump(path: Path) -> dict[str, dict[str, dict]]:
    """domain -> identifier -> {parent, visible, order}, checked: every identifier a readable name, every parent
    a row of the dump."""
    types: dict[str, dict[str, dict]] = {}
    for number, row in enumerate(_rows(path), start=1):
        where = f"{path} row {number}"
        identifier = row.get("identifier")
        if not isinstance(identifier, str) or identifier_problem(identifier):
            why = identifier_problem(str(identifier)) or "not text"
            raise BadInput(f"{where}: identifier {_shown(identifier)}: {why}")
        parent = row.get("parent", row.get("parent_id"))
        if isinstance(parent, list) and len(parent) == 1:
            parent = parent[0]
        if parent in ("", None):
            parent = None
        elif not isinstance(parent, str) or identifier_problem(parent):
            raise BadInput(f"{where}: parent {_shown(parent)} is not a benchmark-type identifier")
        order = row.get("order", 999)
        try:
            order = int(order if order not in (None, "") else 999)
        except (TypeError, ValueError, OverflowError):  # OverflowError: Infinity; ValueError: NaN, 5000 digits
            raise BadInput(f"{where}: order {_shown(order)} is not a whole number") from None
        if not MIN_ORDER <= order <= MAX_ORDER:
            raise BadInput(f"{where}: order {_shown(order)} is not a whole number from {MIN_ORDER} to {MAX_ORDER} "
                           "(the website's integer column)")
        domain = str(row.get("domain") or "vision")
        if identifier_problem(domain):
            raise BadInput(f"{where}: domain {_shown(domain)}: {identifier_problem(domain)}")
        types.setdefault(domain, {})[identifier] = {"parent": parent, "visible": _flag(row.get("visible", False),
                                                                                       where), "order": order}
    if not types:
        raise BadInput(f"{path}: no benchmark types in it")
    for domain, rows in types.items():
        for identifier, row in rows.items():
            if row["parent"] is not None and row["parent"] not in rows:
                raise BadInput(f"{path}: {_shown(identifier)} names parent {row['parent']!r}, which is not a {domain} "
                               "row of the dump")
    return types


def _nodes(rows: dict[str, dict]) -> set[str]:
    """The rows that are levels: every root (the website's roots are `average_<domain>` and engineering nodes) and
    every row something hangs under; the rest are benchmarks."""
    return {r["parent"] for r in rows.values() if r["parent"]} | {i for i, r in rows.items() if r["parent"] is None}


def _q(text: str) -> str:
    """A TOML basic string."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def to_toml(types: dict[str, dict[str, dict]], source: str) -> str:
    """The hierarchy file for these types (brain-score rules, every node as the website has it)."""
    lines = [f"# brain-score.org's benchmark types, imported by `score-plugins hierarchy import` from {_q(source)}",
             "# (roots named average_<domain> rank; roots with 'engineering' in their name are shown apart,",
             "# as mv.sql 406 treats them)", ""]
    for domain, rows in sorted(types.items()):
        parents = _nodes(rows)
        roots = sorted(i for i, r in rows.items() if r["parent"] is None)
        average = f"average_{domain}" if f"average_{domain}" in rows else None
        apart = [r for r in roots if "engineering" in r.lower() and r != average]
        lines += [f"[{_q(domain)}]"]
        if average:
            lines.append(f"root = {_q(average)}")
        lines += [f"apart = [{', '.join(_q(a) for a in apart)}]", "adopt = false", "",
                  f"[{_q(domain)}.rules]", 'preset = "brain-score"', "", f"[{_q(domain)}.parents]"]
        lines += [f"{_q(i)} = {_q(rows[i]['parent'] or '')}" for i in sorted(rows) if i in parents]
        lines += ["", f"[{_q(domain)}.place]"]
        lines += [f"{_q(i)} = {_q(rows[i]['parent'] or '')}" for i in sorted(rows) if i not in parents]
        lines += ["", f"[{_q(domain)}.visible]"]
        lines += [f"{_q(i)} = {'true' if rows[i]['visible'] else 'false'}" for i in sorted(rows)]
        lines += ["", f"[{_q(domain)}.order]"]
        lines += [f"{_q(i)} = {rows[i]['order']}" for i in sorted(rows)]
        lines.append("")
    text = "\n".join(lines)
    tomllib.loads(text)  # what we write is what `hierarchy` reads back (fails closed, never half a file)
    return text


def import_dump(dump: Path, out: Path) -> dict:
    """Write the hierarchy file for `dump` to `out` (atomically); what it holds, per domain."""
    types = read_dump(dump)
    text = to_toml(types, dump.name)
    out = Path(out)
    if out.is_dir():
        raise BadInput(f"--out {out} is a folder; name the hierarchy file to write")
    try:
        write_atomically(out, text, 0o600)
    except OSError as exc:
        raise BadInput(f"--out {out}: cannot be written ({exc.strerror or exc.__class__.__name__})") from None
    summary = {}
    for domain, rows in sorted(types.items()):
        parents = _nodes(rows)
        summary[domain] = {"types": len(rows), "nodes": len(parents & set(rows)),
                           "leaves": len(set(rows) - parents), "hidden": sum(1 for r in rows.values()
                                                                             if not r["visible"])}
    return {"out": str(out), "domains": summary}
