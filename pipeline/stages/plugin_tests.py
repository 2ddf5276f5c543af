"""Run changed plugins' own tests (their test.py) with pytest inside each plugin's environment.

What Brain-Score's unittests_plugins job does, with our environments: for every plugin the
change touches (or every plugin of a type in `test_all_plugins`), lock its requirements plus
pytest, build the environment (the same build_env.sh a scoring job uses), run its tests on a
snapshot of the code at --head, and merge every report into one JUnit XML file.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from envs.lock import EnvError, EnvSpec, lock_environment, validate_requirements
from jobscripts import PluginTestJob, PluginTestTask, render_env_builder, render_plugin_test_job
from pipeline.catalog import gitrepo
from pipeline.stages.bundle import copy_job_package
from pipeline.config import Settings, python_version
from pipeline.confine import build_network, lock_jail, require_sandbox
from pipeline.inert import inert
from pipeline.stages.detect import Change
from pipeline.executors.base import job_environment
from pipeline.catalog.plugins import PLUGIN_TYPES, Catalog, Plugin

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
    """Lock each plugin's environment, render the plugin-test job, run each of its array tasks as
    Slurm would (bash, array variables set, the job allow-list environment), merge the reports."""
    require_sandbox(settings)  # the tests are submitter code: nothing runs where the sandbox cannot be set up
    pyver = python_version(settings.python, settings.python_version)
    results: list[PluginTestResult] = []
    suites = ET.Element("testsuites", name="unittests_plugins")
    with tempfile.TemporaryDirectory(prefix="plugin-tests-") as tmp:
        tmp_path = Path(tmp)
        code, reports = tmp_path / "code", tmp_path / "reports"
        gitrepo.export_tree(catalog.repo, catalog.commit, catalog.domain_root, code)
        builder = tmp_path / "build_env.sh"
        # plugin tests run in uv environments on `python` whatever env_backend is (conda: scoring jobs only)
        builder.write_text(render_env_builder(backend="uv", uv=settings.uv, python=settings.python,
                                              package_cache=str(settings.package_cache or ""),
                                              sandbox=settings.sandbox,
                                              extra_ro=tuple(settings.sandbox_extra_paths),
                                              network=build_network(settings)))
        copy_job_package(tmp_path)  # the builders and the test job run its sandbox.py
        tasks: list[PluginTestTask] = []
        for plugin in plugins_to_test(change, catalog):
            name = f"{plugin.type}/{plugin.name}"
            tests = sorted((code / plugin.path).glob("test*.py"))
            if not tests:
                results.append(PluginTestResult(name, "no-tests", "the plugin has no test.py"))
                continue
            try:
                spec = EnvSpec(validate_requirements([*catalog.requirements(plugin), TEST_REQUIREMENT], settings.requirement_url_schemes), pyver,
                               "uv")
                lock = lock_environment(spec, settings.locks_dir, settings.coordinator_uv, jail=lock_jail(settings))
            except EnvError as exc:
                results.append(PluginTestResult(name, "error", f"env_build: {exc}"))
                _error_suite(suites, name, f"env_build: {exc}")
                continue
            tasks.append(PluginTestTask(len(tasks), name, lock.env_hash, str(lock.path), tuple(map(str, tests))))
        script = tmp_path / "plugin_test_job.sh"
        script.write_text(render_plugin_test_job(PluginTestJob(
            code_dir=str(code), report_dir=str(reports), build_env=str(builder),
            env_root=str(Path(settings.env_root).resolve()), tasks=tuple(tasks),
            slurm=settings.slurm_options("plugin-tests", f"0-{max(len(tasks) - 1, 0)}"), python=settings.python,
            sandbox=settings.sandbox, network=settings.sandbox_network)))
        for task in tasks:
            proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=settings.pair_timeout,
                                  env=job_environment({"SLURM_ARRAY_TASK_ID": str(task.index)}))
            report = read_report(reports / f"task-{task.index}" / "junit.xml")
            if proc.returncode == 3 and report is None:
                log = (reports / f"env-{task.index}.log")
                detail = "env_build: " + (log.read_text()[-2000:] if log.exists() else proc.stderr[-2000:])
                results.append(PluginTestResult(task.plugin, "error", detail))
                _error_suite(suites, task.plugin, detail)
                continue
            status = "passed" if proc.returncode == 0 else "failed"
            results.append(PluginTestResult(task.plugin, status, proc.stdout[-2000:] if status == "failed" else ""))
            if report is not None:
                _inert_tree(report)
                for suite in report.iter("testsuite"):
                    suite.set("name", task.plugin)
                    suites.append(suite)
            else:
                _error_suite(suites, task.plugin, proc.stdout[-2000:] + proc.stderr[-2000:])
    junit.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(junit, encoding="utf-8", xml_declaration=True)
    return results


def read_report(path: Path, cap: int = 20 << 20) -> ET.Element | None:
    """The JUnit report a sandboxed pytest wrote: a regular file opened without following a link (the plugin's
    user owned that folder), capped in size; None when there is none or it is not XML."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        data = f.read(cap + 1)
    if len(data) > cap:
        return None
    try:
        return ET.fromstring(data)
    except ET.ParseError:
        return None


def _inert_tree(root: ET.Element) -> None:
    """The plugin's report as Jenkins will show it: every text and attribute made inert (pipeline/inert.py)."""
    for element in root.iter():
        element.text = inert(element.text) if element.text else element.text
        element.tail = inert(element.tail) if element.tail else element.tail
        for key, value in element.attrib.items():
            element.attrib[key] = inert(value)


def _error_suite(suites: ET.Element, name: str, message: str) -> None:
    message = inert(message)  # a build script's output: no control character in the XML (nor on Jenkins' page)
    suite = ET.SubElement(suites, "testsuite", name=name, tests="1", errors="1", failures="0")
    case = ET.SubElement(suite, "testcase", classname=name, name="environment")
    ET.SubElement(case, "error", message=message[:200]).text = message
