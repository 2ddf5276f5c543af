"""The in-job installer: what a plugin's dynamic setup.py asks for, read and installed inside the sandbox."""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
from pathlib import Path

from .manifest import Manifest
from .pair_sandbox import NOBODY, _process_limit, child_env, child_setup, sandboxed
from .outage import classify, key_line
from .spool import StageError


SETUP_READER = r'''
import json, os, sys, types
try:
    import setuptools
except ImportError:  # the locked environment need not have setuptools: a stand-in that only listens
    setuptools = types.ModuleType("setuptools")
    setuptools.find_packages = lambda *args, **kwargs: []
    setuptools.find_namespace_packages = setuptools.find_packages
    sys.modules["setuptools"] = setuptools
found = {}
def capture(**kwargs):
    found.update(kwargs)
setuptools.setup = capture
try:
    import distutils.core
    distutils.core.setup = capture
except Exception:
    pass
sys.argv = ["setup.py", "egg_info"]
exec(compile(open("setup.py").read(), "setup.py", "exec"), {"__name__": "__main__", "__file__": "setup.py"})
requires = found.get("install_requires") or []
requires = [requires] if isinstance(requires, str) else list(requires)
print("SCORE_PLUGINS_REQUIRES " + json.dumps([str(r) for r in requires]))
'''
REQUIREMENT_LINE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?\s*([<>=!~]=?[^;\s]*(\s*,\s*[<>=!~]=?[^;\s]*)*)?(\s*;.*)?$")


def install_in_job(manifest: Manifest, pair: dict, env_python: str, workdir: Path, log: Path,
                   wanted: list[str] | None = None, visible: list[str] | None = None, *, uid: int = NOBODY) -> dict:
    """What a plugin's setup.py asks for, when that cannot be read statically: setup.py is run inside the sandbox
    (with `setup()` captured, nothing built), the requirements it names are checked, installed with uv into the
    pair's work folder (inside the sandbox too) and recorded as installed. Returns {"installed": [...]} or
    {"failure": ...}. `wanted`: these folders only, in a sandbox that sees `visible` (one side of the pair)."""
    root = Path(manifest.code_dir) / manifest.domain_root
    uv = manifest.uv or shutil.which("uv") or "uv"
    requirements: list[str] = []
    with open(log, "ab") as logf:
        for folder in pair["setup_in_job"] if wanted is None else wanted:
            plugin_dir = root / folder
            proc = _sandboxed_run(manifest, pair, workdir, [env_python, "-c", SETUP_READER], env_python, (),
                                  plugin_dir, logf, capture=True, uid=uid, folders=visible)
            lines = [line for line in proc[1].splitlines() if line.startswith("SCORE_PLUGINS_REQUIRES ")]
            try:
                found = json.loads(lines[-1].split(" ", 1)[1]) if lines else None
            except ValueError:
                found = None
            if proc[0] != 0 or not isinstance(found, list):
                return {"failure": {"state": "FAILED", "stage": "env_build",
                                    "reason": f"the setup.py of {folder} could not be read in the job (exit {proc[0]})"}}
            for item in found:
                if not isinstance(item, str) or not REQUIREMENT_LINE.match(item.strip()) or len(item) > 200:
                    return {"failure": {"state": "FAILED", "stage": "env_build",
                                        "reason": f"the setup.py of {folder} names {str(item)[:80]!r}, not a plain "
                                                  "requirement from the index"}}
                requirements.append(item.strip())
        if not requirements:
            return {"installed": []}
        logf.write(f"[score-plugins] installing in the job (setup.py not readable statically): "
                   f"{', '.join(requirements)}\n".encode())
        logf.flush()
        # `site` was made by root in a root-owned work folder before any plugin code ran (sandbox_prepare): the
        # plugin cannot have replaced it with a symlink, and nothing here changes an owner or follows a link
        site = workdir / "site"
        logf.flush()
        began = log.stat().st_size if log.exists() else 0
        code, _ = _sandboxed_run(manifest, pair, workdir, [uv, "pip", "install", "--quiet", "--python", env_python,
                                                           "--target", str(site), *requirements],
                                 env_python, (uv,), workdir / "home", logf, uid=uid, folders=visible)
    if code != 0:
        reason = f"installing {', '.join(requirements)[:200]} in the job failed (exit {code})"
        said = _written_since(log, began)  # uv's own words only, not what the plugin printed before
        kind = classify(said, code)
        if kind is None:
            return {"failure": {"state": "FAILED", "stage": "env_build", "reason": reason}}
        return {"failure": {"state": "INFRA_FAIL", "stage": "env_build",
                            "reason": f"infrastructure ({kind}): {reason}: {key_line(said)}"}}
    installed = sorted(name[:-len(".dist-info")].replace("-", "==", 1) for name in os.listdir(site)
                       if name.endswith(".dist-info"))
    return {"installed": installed}


def _written_since(log: Path, offset: int, cap: int = 64 << 10) -> str:
    """What the log got from `offset` on (its last `cap` bytes), decoded leniently."""
    try:
        with open(log, "rb") as f:
            f.seek(max(offset, f.seek(0, os.SEEK_END) - cap))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _sandboxed_run(manifest: Manifest, pair: dict, workdir: Path, cmd: list[str], env_python: str,
                   extra_ro: tuple[str, ...], cwd: Path, logf, capture: bool = False,  # noqa: ANN001
                   uid: int = NOBODY, folders: list[str] | None = None) -> tuple[int, str]:
    """One helper command in one side's sandbox (same view, same user, same limits, no cache), with a time
    limit."""
    try:
        args, _how, fds = sandboxed(manifest, pair, workdir, cmd, env_python=env_python, extra_ro=extra_ro, cwd=cwd,
                                    uid=uid, folders=folders, writable=())
    except StageError as exc:
        logf.write(f"[score-plugins] {exc.reason}\n".encode())
        return 1, ""
    env = child_env(manifest, workdir, {})
    env.update({"UV_CACHE_DIR": str(workdir / "home" / ".uv-cache"), "UV_PYTHON_DOWNLOADS": "never",
                "UV_LINK_MODE": "copy"})
    try:
        proc = subprocess.run(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, pass_fds=fds,
                              stdout=subprocess.PIPE if capture else logf, stderr=logf,
                              timeout=int(manifest.pair_timeout), preexec_fn=child_setup(manifest, _process_limit(
                                  manifest)))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    finally:
        for fd in fds:
            os.close(fd)
    out = proc.stdout.decode("utf-8", "replace")[:100_000] if capture and proc.stdout else ""
    if capture:
        logf.write(out.encode())
    return proc.returncode, out
