"""Run changed plugins' own tests (their test.py) with pytest inside each plugin's environment.

What Brain-Score's unittests_plugins job does, with our environments: for every plugin the
change touches (or every plugin of a type in `test_all_plugins`), lock its requirements plus
pytest, build the environment (the same build_env.sh a scoring job uses), run its tests on a
snapshot of the code at --head, and merge every report into one JUnit XML file.
"""

from __future__ import annotations

import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from envs.lock import EnvError, EnvSpec, lock_environment, validate_requirements
from jobscripts import render_env_builder
from pipeline import gitrepo
from pipeline.config import Settings
from pipeline.detect import Change
from pipeline.executors.local import job_environment
from pipeline.plugins import PLUGIN_TYPES, Catalog, Plugin
from pipeline.run import python_version

TEST_REQUIREMENT = "pytest>=7"


@dataclass
class PluginTestResult:
    plugin: str
    status: str  # passed | failed | error | no-tests
    detail: str = ""


def plugins_to_test(change: Change, catalog: Catalog) -> list[Plugin]:
    chosen: list[Plugin] = []
    for plugin_type in PLUGIN_TYPES:
        if plugin_type in change.test_all_plugins:
            chosen.extend(catalog.of_type(plugin_type))
        else:
            chosen.extend(catalog.plugins[(plugin_type, n)] for n in change.changed_plugins[plugin_type])
    return chosen


def run_plugin_tests(settings: Settings, change: Change, catalog: Catalog, junit: Path) -> list[PluginTestResult]:
    builder_text = render_env_builder(backend=settings.env_backend, uv=settings.uv, python=settings.python,
                                      package_cache=str(settings.package_cache or ""))
    pyver = python_version(settings.python)
    results: list[PluginTestResult] = []
    suites = ET.Element("testsuites", name="unittests_plugins")
    with tempfile.TemporaryDirectory(prefix="plugin-tests-") as tmp:
        tmp_path = Path(tmp)
        code = tmp_path / "code"
        gitrepo.export_tree(catalog.repo, catalog.commit, catalog.domain_root, code)
        builder = tmp_path / "build_env.sh"
        builder.write_text(builder_text)
        for plugin in plugins_to_test(change, catalog):
            name = f"{plugin.type}/{plugin.name}"
            tests = sorted((code / plugin.path).glob("test*.py"))
            if not tests:
                results.append(PluginTestResult(name, "no-tests", "the plugin has no test.py"))
                continue
            try:
                spec = EnvSpec(validate_requirements([*catalog.requirements(plugin), TEST_REQUIREMENT]), pyver,
                               settings.env_backend)
                lock = lock_environment(spec, settings.locks_dir, settings.uv)
            except EnvError as exc:
                results.append(PluginTestResult(name, "error", f"env_build: {exc}"))
                _error_suite(suites, name, f"env_build: {exc}")
                continue
            env_path = Path(settings.env_root).resolve() / lock.env_hash
            built = subprocess.run(["bash", str(builder), str(env_path), str(lock.path)], capture_output=True,
                                   text=True, env=job_environment({}))
            if built.returncode != 0:
                detail = "env_build: " + (built.stderr or built.stdout)[-2000:]
                results.append(PluginTestResult(name, "error", detail))
                _error_suite(suites, name, detail)
                continue
            report = tmp_path / f"{plugin.type}-{plugin.name}.xml"
            env = job_environment({"PYTHONPATH": str(code), "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(tmp_path)})
            proc = subprocess.run([str(env_path / "bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   f"--junitxml={report}", "-o", f"junit_suite_name={name}",
                                   *[str(t) for t in tests]], cwd=code, env=env, capture_output=True, text=True,
                                  timeout=settings.pair_timeout)
            status = "passed" if proc.returncode == 0 else "failed"
            results.append(PluginTestResult(name, status, proc.stdout[-2000:] if status == "failed" else ""))
            if report.exists():
                for suite in ET.parse(report).getroot().iter("testsuite"):
                    suite.set("name", name)
                    suites.append(suite)
            else:
                _error_suite(suites, name, proc.stdout[-2000:] + proc.stderr[-2000:])
    junit.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(junit, encoding="utf-8", xml_declaration=True)
    return results


def _error_suite(suites: ET.Element, name: str, message: str) -> None:
    suite = ET.SubElement(suites, "testsuite", name=name, tests="1", errors="1", failures="0")
    case = ET.SubElement(suite, "testcase", classname=name, name="environment")
    ET.SubElement(case, "error", message=message[:200]).text = message
