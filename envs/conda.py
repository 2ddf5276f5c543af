"""Conda environments: environment.yml + pip requirements -> ONE conda-lock.yml -> solved hash.

The conda part (interpreter and conda packages) is solved by py-rattler; the pip part (the domain's and the
plugins' pip requirements) by `uv pip compile` against the interpreter version the conda part locked, and
written into the same file as conda-lock `manager: pip` entries (envs/piplayer.py).
The environment key hashes the solved records (name, version, build, sha256), never
conda-lock's `content_hash`, which hashes the inputs.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from envs.lock import EnvError, EnvOutage, LockJail, failure, lock_cache
from pipeline import safe_yaml
from pipeline.atomic import write_atomically
from envs.piplayer import compile_pip_layer

CONDA_BACKENDS = ("rattler", "micromamba", "conda")
SPEC = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(\s*[<>=!~]=?\s*[A-Za-z0-9_.*+!-]+(,\s*[<>=!~]=?\s*[A-Za-z0-9_.*+!-]+)*)?"
                  r"(\s*=\s*[A-Za-z0-9_.*]+)?$")
CHANNEL = re.compile(r"^(file://|https://)[A-Za-z0-9_./:@%+-]+$|^[A-Za-z0-9_-]+$")


def read_environment_yml(text: str, where: str) -> tuple[list[str], list[str]]:
    """(channels, conda specs) of a plugin's environment.yml; pip sections, URLs and odd specs are refused, and so
    is a document with YAML aliases (`pipeline.safe_yaml`: nothing in it is expanded or formatted whole)."""
    try:
        return environment_of(text)
    except (EnvError, safe_yaml.Refused) as exc:
        raise EnvError(f"{where}: {exc}") from None


def environment_of(text: str) -> tuple[list[str], list[str]]:
    """`read_environment_yml` without the file's name in its messages (the same blob can sit in many folders);
    safe_yaml.Refused when the text is over a reading bound."""
    try:
        data = safe_yaml.load(text) or {}
    except yaml.YAMLError as exc:
        raise EnvError(f"not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise EnvError("expected a mapping with channels and dependencies")
    channels = [c if isinstance(c, str) else safe_yaml.shown(c) if isinstance(c, (list, dict)) else str(c)
                for c in data.get("channels") or []]
    specs = []
    for dep in data.get("dependencies") or []:
        if not isinstance(dep, str):
            raise EnvError(f"only conda dependencies are supported (found {safe_yaml.shown(dep)}); "
                           "put pip packages in requirements.txt")
        if not SPEC.match(dep.strip()):
            raise EnvError(f"dependency {safe_yaml.shown(dep)} is not a conda match spec")
        specs.append(dep.strip())
    for channel in channels:
        if not CHANNEL.match(channel):
            raise EnvError(f"channel {safe_yaml.shown(channel)} is not a name, https:// or file:// URL")
    return channels, specs


def python_spec(requires_python: str, python_version: str) -> str:
    """The interpreter's conda match spec: the domain's `requires-python` (PEP 440 specifiers read as conda's),
    else the configured `python_version` (`3.11` -> `python 3.11.*`)."""
    if requires_python.strip():
        try:
            specifiers = SpecifierSet(requires_python)
        except InvalidSpecifier:
            raise EnvError(f"requires-python {requires_python!r} is not a version specifier") from None
        parts = sorted(str(s) for s in specifiers)
        if parts:
            return "python " + ",".join(parts)
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", python_version):
        raise EnvError(f"python_version {python_version!r} is not a version like 3.11")
    return f"python {python_version}.*"


@dataclass(frozen=True)
class CondaLock:
    path: Path  # conda-lock.yml
    packages: tuple[str, ...]  # conda: name==version=file, sorted
    lock_hash: str
    env_hash: str
    backend: str
    kind: str = "conda"
    pip_packages: tuple[str, ...] = ()  # the pip layer: name==version, or name @ git+...@commit, sorted


def rattler_tool() -> str:
    return str(Path(__file__).with_name("rattler_tool.py"))


def lock_path(locks_dir: Path, channels: list[str], specs: list[str], pip_requirements: tuple[str, ...] = (),
              platform: str = "linux-64") -> Path:
    """Where the lock of these inputs is cached (`reproduce` puts a run's own lockfile there)."""
    parts = [platform, *channels, "--", *sorted(specs)]
    if pip_requirements:
        parts += ["--pip", *sorted(pip_requirements)]
    return locks_dir / f"conda-{hashlib.sha256(chr(10).join(parts).encode()).hexdigest()[:16]}.yml"


def lock_conda(channels: list[str], specs: list[str], locks_dir: Path, backend: str, platform: str = "linux-64",
               python: str = sys.executable, pip_requirements: tuple[str, ...] = (), uv: str = "uv",
               jail: LockJail = LockJail()) -> CondaLock:
    """Solve with py-rattler in a subprocess, then the pip layer with uv against the locked interpreter (in
    `jail`, like every `uv pip compile`: it runs build backends); cached by the inputs' hash, keyed by the
    solution's."""
    if backend not in CONDA_BACKENDS:
        raise EnvError(f"conda backend must be one of {', '.join(CONDA_BACKENDS)}, not {backend!r}")
    if not channels:
        raise EnvError("a conda environment needs at least one channel")
    locks_dir.mkdir(parents=True, exist_ok=True)
    path = lock_path(locks_dir, channels, specs, pip_requirements, platform)
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "conda-lock.yml"
            cmd = [python, rattler_tool(), "solve", "--platform", platform, "--out", str(out)]
            for channel in channels:
                cmd += ["--channel", channel]
            for attempt in (1, 2):
                try:
                    proc = subprocess.run([*cmd, *specs], capture_output=True, text=True, timeout=600)
                except subprocess.TimeoutExpired:
                    raise EnvOutage("infrastructure (timeout): solving the plugins' conda dependencies timed out "
                                    "after 600 s") from None
                if out.exists() and (proc.returncode == 0 or _complete(out)):
                    break  # py-rattler can abort at interpreter exit (its threads) after writing a whole lock
                crashed = proc.returncode < 0 or "Fatal Python error" in proc.stderr
                if attempt == 2 or not crashed:  # rattler's "cannot solve" is the plugins'; a fetch error is not
                    raise failure("solving", "the plugins' conda dependencies", proc.stderr.strip()[-500:],
                                  proc.stderr, proc.returncode)
            text = out.read_text()
            if pip_requirements:
                text = _with_pip_layer(text, pip_requirements, uv, platform, locks_dir, jail)
            write_atomically(path, text)
    return conda_lock_from_file(path, backend)


def _with_pip_layer(text: str, pip_requirements: tuple[str, ...], uv: str, platform: str, locks_dir: Path,
                    jail: LockJail) -> str:
    """The conda lock with the pip layer added as `manager: pip` entries, solved for its interpreter."""
    data = yaml.safe_load(text)
    python = [p for p in data["package"] if p["name"] == "python" and p.get("manager", "conda") == "conda"]
    if not python:
        raise EnvError("the pip requirements need a python in the conda environment, and none was locked")
    version = ".".join(str(python[0]["version"]).split(".")[:2])
    data["package"].extend(compile_pip_layer(pip_requirements, version, uv, platform=platform,
                                             cache=lock_cache(locks_dir), jail=jail))
    data["metadata"]["sources"] = ["environment.yml", "requirements (pip)"]
    return yaml.safe_dump(data, sort_keys=False)


def _complete(path: Path) -> bool:
    """A conda-lock file that parses and lists its packages."""
    try:
        data = yaml.safe_load(path.read_text())
        return isinstance(data, dict) and isinstance(data.get("package"), list)
    except (OSError, yaml.YAMLError):
        return False


def conda_lock_from_file(path: Path, backend: str) -> CondaLock:
    """The lock's identity: the conda part as before, the pip part (when there is one) added to both hashes."""
    data = yaml.safe_load(path.read_text())
    try:
        conda = [p for p in data["package"] if p.get("manager", "conda") == "conda"]
        pip = [p for p in data["package"] if p.get("manager") == "pip"]
        packages = tuple(sorted(f"{p['name']}=={p['version']}={p['url'].rsplit('/', 1)[-1]}" for p in conda))
        pip_packages = tuple(sorted(f"{p['name']} @ {p['url']}" if (p.get("source") or {}).get("type") == "url"
                                    else f"{p['name']}=={p['version']}" for p in pip))
        digests = sorted(f"{p['name']}:{p['hash'].get('sha256') or p['hash'].get('md5')}" for p in conda)
        digests += sorted(f"pip:{p['name']}:{p['hash'].get('sha256') or p['url']}" for p in pip)
    except (KeyError, TypeError, AttributeError) as exc:
        raise EnvError(f"{path} is not a conda-lock file ({exc})") from None
    lock_hash = hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]
    solved = [backend, *packages] + (["--pip", *pip_packages] if pip_packages else [])
    env_hash = hashlib.sha256("\n".join(solved).encode()).hexdigest()[:16]
    return CondaLock(path, packages, lock_hash, env_hash, backend, pip_packages=pip_packages)


def render_explicit(lockfile: Path, out_dir: Path, platform: str = "linux-64") -> Path:
    """`conda-lock render --kind explicit`: the `conda create --file` input for the conda backend."""
    exe = Path(sys.executable).parent / "conda-lock"
    proc = subprocess.run([str(exe if exe.exists() else "conda-lock"), "render", "--kind", "explicit", "-p", platform,
                           "--filename-template", str(out_dir / "conda-{platform}.lock"), str(lockfile)],
                          capture_output=True, text=True, timeout=300)
    target = out_dir / f"conda-{platform}.lock"
    if proc.returncode != 0 or not target.exists():
        raise EnvError(f"conda-lock render failed: {proc.stderr.strip()[-500:]}")
    return target


def stage_lockfile(lockfile: Path, folder: Path, platform: str = "linux-64") -> Path:
    """`folder/conda-lock.yml` (a copy of the one lockfile) with its explicit rendering beside it, as the node's
    build step reads them: the conda URLs for micromamba and conda, the `# pip` lines for uv. The rendering is
    made once per cached lock (beside it), not once per run."""
    folder.mkdir(parents=True, exist_ok=True)
    rendered = lockfile.with_name(f"{lockfile.stem}.{platform}.explicit")
    if not rendered.exists():
        with tempfile.TemporaryDirectory(dir=lockfile.parent) as tmp:
            os.replace(render_explicit(lockfile, Path(tmp), platform), rendered)
    for source, name in ((lockfile, "conda-lock.yml"), (rendered, f"conda-{platform}.lock")):
        if not (folder / name).exists():
            write_atomically(folder / name, source.read_text())
    return folder / "conda-lock.yml"
