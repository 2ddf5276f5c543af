"""An outage is infrastructure, never the plugin's: a real package index on localhost (a PEP 503 folder served by
Python's http.server, over plain HTTP and over HTTPS with a self-signed certificate), reached as every test reaches
packages, through uv's index setting (`UV_DEFAULT_INDEX`; the other tests use uv's default, PyPI, through the
machine's CA bundle in `SSL_CERT_FILE`), with `sandbox_network = "host"`: a service on the node is out of a
sandboxed step's reach with the default "on". Nothing here needs PyPI: the one requirement is a wheel made here.

The issue's story, build after build of one workspace: the index at a closed port, then TLS that the agent does
not trust (its CA setting missing), each exit 3 with nothing cached and no submitter mailed; then the agent fixed
(the certificate in its `SSL_CERT_FILE`) and the same change scores without `--retry-failed-solves`; then the index
gone while a node builds the environment (infrastructure too); and last the plugins' own failures (no solution, a
build backend that fails) are theirs: cached, mailed, exit 1.
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import http.server
import json
import os
import socket
import ssl
import subprocess
import threading
import zipfile
from pathlib import Path

from tests.conftest import commit_all, write

SUBMITTER = "mallory@example.org"
ADMIN = "admin@example.org"


def tiny_wheel(folder: Path) -> tuple[str, str]:
    """A pure-Python wheel `tinydep 1.0` (module `tinydep`, VALUE = 0.5): its file name and sha256."""
    name = "tinydep-1.0-py3-none-any.whl"
    files = {"tinydep.py": b"VALUE = 0.5\n",
             "tinydep-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n",
             "tinydep-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: score-plugins-tests\n"
                                           b"Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for path, data in files.items()) + "tinydep-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(folder / name, "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
        wheel.writestr("tinydep-1.0.dist-info/RECORD", record)
    return name, hashlib.sha256((folder / name).read_bytes()).hexdigest()


class Index:
    """A PEP 503 simple index of one wheel, served from a folder over HTTP, and over HTTPS with a self-signed
    certificate for 127.0.0.1 (made by openssl for this test)."""

    def __init__(self, root: Path):
        (root / "files").mkdir(parents=True)
        wheel, digest = tiny_wheel(root / "files")
        write(root, "simple/tinydep/index.html",
              f'<html><body><a href="../../files/{wheel}#sha256={digest}">{wheel}</a></body></html>\n')
        write(root, "simple/index.html", '<html><body><a href="tinydep/">tinydep</a></body></html>\n')
        # a CA of this test's own (what an agent must trust) and the index's certificate for 127.0.0.1, signed by it
        self.cert, ca_key, key, leaf = root / "ca.pem", root / "ca.key", root / "key.pem", root / "leaf.pem"
        (root / "leaf.ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
        for cmd in (["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=score-plugins test CA",
                     "-keyout", str(ca_key), "-out", str(self.cert)],
                    ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key),
                     "-out", str(root / "leaf.csr")],
                    ["x509", "-req", "-in", str(root / "leaf.csr"), "-CA", str(self.cert), "-CAkey", str(ca_key),
                     "-CAcreateserial", "-days", "1", "-extfile", str(root / "leaf.ext"), "-out", str(leaf)]):
            subprocess.run(["openssl", *cmd], check=True, capture_output=True)

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

        self.https = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(leaf, key)
        self.https.socket = context.wrap_socket(self.https.socket, server_side=True)
        threading.Thread(target=self.https.serve_forever, daemon=True).start()
        self.url = f"https://127.0.0.1:{self.https.server_address[1]}/simple"

    def stop(self) -> None:
        self.https.shutdown()


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def mail_to(workspace) -> dict[str, list[str]]:  # noqa: ANN001
    """Recipient -> subjects of every message in the outbox."""
    found: dict[str, list[str]] = {}
    for path in workspace.state.glob("outbox/**/*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        found.setdefault(str(message["To"]), []).append(str(message["Subject"]))
    return found


def run(workspace, repo: Path, *extra: str) -> tuple[int, dict, str]:  # noqa: ANN001
    proc = workspace.cli("run", "--repo", str(repo), "--base", "HEAD~1", "--models", "tiny-model", *extra,
                         "--format", "json")
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def tinydep_change(example_repo: Path, tmp_path: Path) -> tuple[Index, Path]:
    """The index (started) and the agent's fixed CA bundle, and a commit adding `tiny-model` and `needs-tinydep`."""
    index = Index(tmp_path / "index")
    bundle = tmp_path / "ca-bundle.pem"  # the agent's CA setting once fixed: the system's CAs and the index's
    system = Path(os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().openssl_cafile)
    bundle.write_text((system.read_text() if system.is_file() else "") + index.cert.read_text())
    write(example_repo, "sklearn_scores/models/tiny/__init__.py",
          "from sklearn_scores import model_registry\n\nmodel_registry['tiny-model'] = lambda: object()\n")
    write(example_repo, "sklearn_scores/benchmarks/needs_tinydep/__init__.py",
          "import tinydep\nfrom sklearn_scores import benchmark_registry\n\nclass Bench:\n"
          "    def __call__(self, model):\n        return tinydep.VALUE\n\n"
          "benchmark_registry['needs-tinydep'] = Bench\n")
    write(example_repo, "sklearn_scores/benchmarks/needs_tinydep/requirements.txt", "tinydep==1.0\n")
    commit_all(example_repo, "a model and a benchmark that needs tinydep", author=f"Mallory <{SUBMITTER}>")
    return index, bundle


def test_an_outage_is_infrastructure_and_the_next_build_scores(workspace, example_repo, tmp_path):
    index, bundle = tinydep_change(example_repo, tmp_path)
    envs = tmp_path / "envs"
    workspace.env.update({"SCORE_PLUGINS_ADMIN_EMAIL": ADMIN, "SCORE_PLUGINS_ENV_ROOT": str(envs),
                          # the sandboxed solver and builder read the agent's CA bundle where it is
                          "SCORE_PLUGINS_SANDBOX_EXTRA_PATHS": str(bundle),
                          # the index is a service on this node, which `sandbox_network = "on"` closes to every
                          # sandboxed step (b35-text): the administrator's explicit choice of the node's own network
                          "SCORE_PLUGINS_SANDBOX_NETWORK": "host"})
    locks = workspace.state / "locks"
    try:
        # 1. the index at a closed port, then 2. TLS the agent does not trust: infrastructure, build after build
        for url, cafile, kind in ((f"http://127.0.0.1:{closed_port()}/simple", None, "index unreachable"),
                                  (index.url, None, "TLS error")):
            workspace.env["UV_DEFAULT_INDEX"] = url
            if cafile is None:
                workspace.env.pop("SSL_CERT_FILE", None)  # uv's own roots: the self-signed index is not trusted
            code, result, err = run(workspace, example_repo, "--benchmarks", "needs-tinydep")
            assert code == 3, (code, err)
            assert [p["state"] for p in result["pairs"]] == ["INFRA_FAIL"], result["pairs"]
            assert result["infrastructure"] and result["infrastructure"][0]["reason"].startswith(
                f"infrastructure ({kind}):"), result["infrastructure"]
            assert f"infrastructure: 1 pair(s) got no environment (tiny-model on needs-tinydep): " \
                   f"infrastructure ({kind})" in err, err
            assert "nothing was cached and no submitter was mailed" in err
            assert not list(locks.glob("*.failed")), "an outage is never cached as a failed solve"
            assert SUBMITTER not in mail_to(workspace), "no submitter hears of an outage"
            # `plan` says it the same way (it crashed with KeyError 'reason' on brain-score/vision, 2026-12-06)
            planned = workspace.cli("plan", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "tiny-model",
                                    "--benchmarks", "needs-tinydep")
            assert planned.returncode == 3 and "Traceback" not in planned.stderr, planned.stderr
            assert f"infrastructure: 1 pair(s) got no environment (tiny-model on needs-tinydep): " \
                   f"infrastructure ({kind})" in planned.stderr, planned.stderr
            status = workspace.json("status", result["run_id"])
            assert [j["state"] for j in status["jobs"]] == ["INFRA_FAIL"], status["jobs"]
        alerts = mail_to(workspace)[ADMIN]
        assert len(alerts) == 2 and all("infrastructure alert" in s for s in alerts), alerts
        # 3. the agent fixed: the same change scores, without --retry-failed-solves
        workspace.env["SSL_CERT_FILE"] = str(bundle)
        code, result, err = run(workspace, example_repo, "--benchmarks", "needs-tinydep")
        assert code == 0, err
        assert [(p["state"], p["score"]) for p in result["pairs"]] == [("COMPLETED", 0.5)], result["pairs"]
        assert [(r["model"], r["benchmark"]) for r in workspace.json("leaderboard")] == [("tiny-model",
                                                                                            "needs-tinydep")]
        mailed = mail_to(workspace)[SUBMITTER]
        assert len(mailed) == 1 and "all scored" in mailed[0], mailed
        # 4. the index gone while a node builds the environment (the lock is cached): infrastructure again
        workspace.env["UV_DEFAULT_INDEX"] = f"http://127.0.0.1:{closed_port()}/simple"
        workspace.env["SCORE_PLUGINS_ENV_ROOT"] = str(tmp_path / "fresh-envs")
        code, result, err = run(workspace, example_repo, "--benchmarks", "needs-tinydep", "--force")
        assert code == 3, err
        [pair] = result["pairs"]
        assert pair["state"] == "INFRA_FAIL" and pair["stage"] == "env_build", pair
        assert pair["reason"].startswith("infrastructure (index unreachable): building the environment failed"), pair
        attempts = workspace.json("status", result["run_id"])["attempts"]
        assert [a["failure_kind"] for a in attempts] == ["INFRASTRUCTURE"], attempts
        assert mail_to(workspace).get(SUBMITTER) == mailed, "no submitter hears of an outage on the node either"
        # 5. the plugins' own failures: no solution, and a build backend that fails; cached, mailed, exit 1
        workspace.env["UV_DEFAULT_INDEX"] = index.url
        backend = tmp_path / "brokenpkg"
        write(backend, "pyproject.toml",  # no [project] table: the metadata needs the backend, which fails
              '[build-system]\nrequires = []\nbuild-backend = "broken"\nbackend-path = ["."]\n')
        write(backend, "broken.py", "def get_requires_for_build_wheel(config_settings=None):\n"
                                    "    raise SystemExit('the plugin build exploded')\n")
        subprocess.run(["git", "init", "--quiet", str(backend)], check=True)
        commit_all(backend, "a package whose build fails", author=f"Mallory <{SUBMITTER}>")
        for folder, identifier, requirement in (("needs_nothing_there", "needs-tinydep-2", "tinydep==2.0"),
                                                ("needs_broken", "needs-broken", f"brokenpkg @ git+file://{backend}")):
            write(example_repo, f"sklearn_scores/benchmarks/{folder}/__init__.py",
                  f"from sklearn_scores import benchmark_registry\n\nbenchmark_registry['{identifier}'] = "
                  "lambda: (lambda model: 0.5)\n")
            write(example_repo, f"sklearn_scores/benchmarks/{folder}/requirements.txt", requirement + "\n")
        commit_all(example_repo, "two benchmarks that cannot have an environment", author=f"Mallory <{SUBMITTER}>")
        workspace.env.update({"SCORE_PLUGINS_REQUIREMENT_URL_SCHEMES": "git+https,git+file",
                              "SCORE_PLUGINS_SANDBOX_EXTRA_PATHS": f"{bundle},{backend}"})
        for attempt in (1, 2):  # the second build reads the cached failures
            code, result, err = run(workspace, example_repo, "--benchmarks", "needs-tinydep-2,needs-broken")
            assert code == 1, err
            reasons = {p["benchmark"]: (p["state"], p["reason"]) for p in result["pairs"]}
            assert reasons["needs-tinydep-2"][0] == "FAILED" and "No solution found" in reasons["needs-tinydep-2"][1]
            assert reasons["needs-broken"][0] == "FAILED" and \
                "the plugin build exploded" in reasons["needs-broken"][1], reasons
            assert not result["infrastructure"]
            assert ("solve failed 0 min ago" in reasons["needs-broken"][1]) == (attempt == 2), reasons
            assert len(list(locks.glob("*.failed"))) == 2
        assert any("failed" in s for s in mail_to(workspace)[SUBMITTER]), mail_to(workspace)
    finally:
        index.stop()


def test_through_the_jenkins_job_an_unreachable_index_is_exit_3_and_the_next_build_scores(example_repo, postgres,
                                                                                          tmp_path):
    """Finding 3 as Jenkins runs it: the prod job's entry script with Jenkins' variables. The index unreachable:
    the build exits 3 (red: infrastructure), nothing is cached, no submitter is mailed, nothing is recorded as
    processed; the next build (index back, same commit range from Jenkins' last green build) scores and mails."""
    from tests.test_jenkins import entry, jenkins_env, migrated, result_of, state_root

    index, bundle = tinydep_change(example_repo, tmp_path)
    prod = migrated(postgres.create_database("outage_prod"), tmp_path, "prod")
    state = state_root(example_repo) / "score-plugins/prod"
    try:
        env = jenkins_env(example_repo, "score_plugins", SCORE_PLUGINS_DB_PROD=prod, MODELS="tiny-model",
                          BENCHMARKS="needs-tinydep", SCORE_PLUGINS_ADMIN_EMAIL=ADMIN,
                          SCORE_PLUGINS_ENV_ROOT=str(tmp_path / "envs"), SCORE_PLUGINS_SANDBOX_EXTRA_PATHS=str(bundle),
                          SCORE_PLUGINS_SANDBOX_NETWORK="host", SSL_CERT_FILE=str(bundle),
                          UV_DEFAULT_INDEX=f"http://127.0.0.1:{closed_port()}/simple")
        proc = entry("score_plugins.sh", env)
        assert proc.returncode == 3, proc.stderr
        assert "infrastructure unreachable or missing: nothing is recorded as processed" in proc.stderr
        result = result_of(example_repo)
        assert [p["state"] for p in result["pairs"]] == ["INFRA_FAIL"], result["pairs"]
        assert not list((state / "locks").glob("*.failed")), "an outage is never cached as a failed solve"
        outbox = {str(m.get("To")) for m in (email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
                                            for p in state.glob("outbox/**/*.eml"))}
        assert outbox == {ADMIN}, outbox  # the admin's alert, no submitter
        env.update(UV_DEFAULT_INDEX=index.url, BUILD_NUMBER="43")
        proc = entry("score_plugins.sh", env)
        assert proc.returncode == 0, proc.stderr
        result = result_of(example_repo)
        assert [(p["state"], p["score"]) for p in result["pairs"]] == [("COMPLETED", 0.5)], result["pairs"]
        mailed = [m for m in (email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
                              for p in state.glob("outbox/**/*.eml")) if str(m.get("To")) == SUBMITTER]
        assert len(mailed) == 1 and "all scored" in str(mailed[0]["Subject"]), [str(m["Subject"]) for m in mailed]
    finally:
        index.stop()
