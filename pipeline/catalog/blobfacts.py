"""What the catalog needs of one file, by kind, computed from the file's bytes alone: so cached by git blob id
(`factscache`), and parsed at most once per blob whatever folder or commit it appears in.

Kinds: `py` (sourcefacts: registrations, loads, imports), `construction` (what a benchmark's construction passes
through, `pipeline.catalog.construction`; the same parse as `py`, see `pyfacts`), `requirements` (requirements.txt
lines), `setup` (setup.py install_requires, read with ast), `environment` (environment.yml channels and specs), `metadata`
(metadata.yml resources, for each plugin type), `pyproject` (the domain's dependencies and requires-python).
Each fact is plain JSON; `refused` says why a file over a reading bound (`bounds`) was not read. Messages never
name the file: the catalog adds the path where the blob sits."""

from __future__ import annotations

from typing import Any

import yaml

from envs.conda import environment_of
from envs.lock import EnvError
from pipeline import bigints, safe_yaml
from pipeline.catalog.bounds import over_size
from pipeline.catalog.domainreqs import parse_requirements, pyproject_facts, setup_py_requirements
from pipeline.catalog.pyfacts import PYTHON_KINDS, python_facts

PLUGIN_TYPES = ("models", "benchmarks", "data", "metrics")
PLUGIN_FILE_KINDS = {"requirements.txt": "requirements", "setup.py": "setup", "environment.yml": "environment",
                     "metadata.yml": "metadata", "metadata.yaml": "metadata"}
DOMAIN_FILE_KINDS = {"pyproject.toml": "pyproject", "setup.py": "setup", "requirements.txt": "requirements"}


def facts_of(kind: str, data: bytes) -> dict:
    """The facts of one blob read as `kind` (a refused one when it is over its size bound)."""
    return facts_of_kinds([kind], data)[kind]


def facts_of_kinds(kinds: list[str], data: bytes) -> dict[str, dict]:
    """kind -> facts of one blob read as each of `kinds`; the Python kinds from one parse."""
    out = {kind: refused_facts(kind, reason) for kind in kinds for reason in [over_size(kind, len(data))] if reason}
    python = [k for k in kinds if k in PYTHON_KINDS and k not in out]
    if python:
        out.update(python_facts(data, python))
    for kind in kinds:
        if kind not in out:
            out[kind] = _text_facts(kind, data)
    return out


TEXT_KINDS = ("requirements", "setup", "environment", "metadata", "pyproject")


def _text_facts(kind: str, data: bytes) -> dict:
    """The facts of a text kind; a value over a bound, or one its reader fails on, refuses the file (by name,
    where the catalog reports it) instead of ending the whole read."""
    if kind not in TEXT_KINDS:
        raise ValueError(f"unknown kind of file {kind!r}")
    try:
        return _read_text(kind, data.decode("utf-8", "replace"))
    except bigints.TooLarge as exc:
        return {"refused": str(exc)}
    except (ValueError, OverflowError, RecursionError) as exc:
        return {"refused": f"cannot be read ({type(exc).__name__}); not read"}


def _read_text(kind: str, text: str) -> dict:
    if kind == "requirements":
        return {"lines": parse_requirements(text)}
    if kind == "setup":
        requirements, why = setup_py_requirements(text)
        return {"requirements": requirements, "why": why}
    if kind == "environment":
        return _environment(text)
    if kind == "metadata":
        return _metadata(text)
    return pyproject_facts(text)


def refused_facts(kind: str, reason: str) -> dict:
    """The facts of a blob that is not read (too large, or missing from the repository)."""
    if kind == "py":
        from pipeline.catalog.sourcefacts import FileFacts

        return FileFacts(refused=reason).to_json()
    return {"refused": reason}


def _environment(text: str) -> dict:
    try:
        channels, specs = environment_of(text)
    except safe_yaml.Refused as exc:
        return {"refused": str(exc)}
    except EnvError as exc:
        return {"problem": str(exc)}
    return {"channels": channels, "specs": specs}


def _metadata(text: str) -> dict:
    """Resources per plugin type (the file says `models:` or `benchmarks:` for per-id entries): one parse."""
    from pipeline.catalog.resources import MAX_BYTES, resources_of

    if len(text) > MAX_BYTES:
        problem = f"larger than {MAX_BYTES} bytes; not read"
        return {"types": {t: [{}, problem] for t in PLUGIN_TYPES}}
    try:
        data: Any = safe_yaml.load(text)
    except safe_yaml.Refused as exc:
        return {"refused": str(exc)}
    except yaml.YAMLError as exc:
        problem = f"not valid YAML ({str(exc).splitlines()[0][:120]})"
        return {"types": {t: [{}, problem] for t in PLUGIN_TYPES}}
    types = {}
    for plugin_type in PLUGIN_TYPES:
        found, problem = resources_of(data, plugin_type)
        types[plugin_type] = [{key: [n.mem_bytes, n.gpus, n.time_minutes] for key, n in found.items()}, problem]
    return {"types": types}
