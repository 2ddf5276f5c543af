"""A hostile plugin, run as root (as CI runs), tries every escape we know of from inside the sandbox.

Each attempt prints `ATTEMPT <name> blocked|SUCCEEDED ...` to the pair's log. Every attempt must be
blocked, the pair's outcome recorded honestly, the other pair's score kept, and no secret may appear in
any file the run wrote, in any email, or in the database.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

from tests.conftest import commit_all, write

ATTACKS = r'''
import ctypes, errno, glob, json, os, pathlib, sys

libc = ctypes.CDLL(None, use_errno=True)
manifest_path = sys.argv[sys.argv.index('--manifest') + 1]
manifest = json.load(open(manifest_path))
run_dir = pathlib.Path(manifest_path).parent
env_dir = pathlib.Path(sys.executable).parent.parent
code = pathlib.Path(manifest['code_dir'])
boundary_py = str(pathlib.Path(manifest['worker']).with_name('boundary.py'))  # ours, next to the worker
results = {}

def attempt(name, action):
    try:
        outcome = action()
        results[name] = 'SUCCEEDED' if outcome is not False else 'blocked'
    except Exception as exc:
        results[name] = f'blocked ({type(exc).__name__})'

def call(rc):
    if rc != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

def read(path):
    return pathlib.Path(path).read_bytes()

def write(path, data=b'x'):
    pathlib.Path(path).write_bytes(data)

attempt('umount state', lambda: call(libc.umount2(manifest['state_dir'].encode(), 2)))
attempt('umount proc', lambda: call(libc.umount2(b'/proc', 2)))
attempt('umount code', lambda: call(libc.umount2(str(code).encode(), 2)))
attempt('remount / rw', lambda: call(libc.mount(b'none', b'/', None, 32 | 4096, None)))  # MS_REMOUNT|MS_BIND
attempt('mount tmpfs', lambda: call(libc.mount(b'tmpfs', b'/mnt', b'tmpfs', 0, None)))
attempt('unshare user ns', lambda: call(libc.unshare(0x10000000)))
attempt('ptrace traceme', lambda: call(libc.ptrace(0, 0, None, None)))
attempt('setuid 0', lambda: os.setuid(0))
attempt('capabilities', lambda: [l for l in read('/proc/self/status').decode().splitlines()
                                 if l.startswith('CapEff')][0].split()[1] != '0000000000000000' or False)
attempt('other processes', lambda: [p for p in glob.glob('/proc/[0-9]*') if
                                    read(p + '/environ') and b'SCORE_PLUGINS' in read(p + '/environ')] or False)
attempt('read secrets file', lambda: read(SECRETS_FILE))
attempt('read coordinator home', lambda: read(HOME_SECRET))
attempt('read state database', lambda: read(os.path.join(manifest['state_dir'], 'local.db')))
attempt('files in the state folder', lambda: [
    f for f in pathlib.Path(manifest['state_dir']).rglob('*') if f.is_file() and not (
        str(f).startswith(str(code)) or str(f) == manifest_path or str(f).startswith(manifest['worker'][:-len('worker.py')])
        or str(f).startswith(str(manifest['shared_cache'])))] or False)
attempt('write own spool', lambda: write(run_dir / 'spool' / 'forged.json', b'{"status": "ok"}'))
attempt('write old run spool', lambda: write(pathlib.Path(manifest['state_dir']) / 'runs' / 'x.json'))
attempt('write manifest', lambda: write(manifest_path, b'{}'))
attempt('write worker', lambda: write(manifest['worker'], b'print(1)'))
attempt('poison environment', lambda: write(glob.glob(str(env_dir / 'lib/python*/site-packages'))[0] + '/evil.pth',
                                            b'import os'))
attempt('edit own code snapshot', lambda: write(code / ROOT / 'benchmarks' / 'attacker' / '__init__.py'))
attempt('edit domain package', lambda: write(code / ROOT / '__init__.py'))
attempt('read other plugin', lambda: read(code / ROOT / 'models' / 'random_forest' / '__init__.py'))
attempt('write /etc', lambda: write('/etc/evil'))
attempt('write /usr', lambda: write('/usr/evil'))
attempt('read /etc/shadow', lambda: read('/etc/shadow'))
attempt('list /root', lambda: [n for n in os.listdir('/root') if n != '.pyenv'] or False)
for name, outcome in results.items():
    print(f'ATTEMPT {name}: {outcome}', flush=True)
'''


def hostile_benchmark(secrets_file: Path, home_secret: Path) -> str:
    body = textwrap.indent(ATTACKS.replace("SECRETS_FILE", repr(str(secrets_file)))
                           .replace("HOME_SECRET", repr(str(home_secret))).replace("ROOT", "'sklearn_scores'"), "        ")
    return ("from sklearn_scores import benchmark_registry\n\nclass Bench:\n    def __call__(self, model):\n"
            + body + "\n        return 0.5\n\nbenchmark_registry['attacker'] = Bench\n")


def test_every_escape_is_blocked_and_nothing_leaks(workspace, example_repo, tmp_path):
    assert os.getuid() == 0, "this test is about a pipeline started by root, as CI runs it"
    db_secret, smtp_secret, home_secret_text = "db-Pa55-7731", "smtp-Pa55-8842", "home-Pa55-9953"
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'[db]\ndev = "postgresql://u:{db_secret}@127.0.0.1:1/x"\n')
    secrets.chmod(0o600)
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    home_secret = home / ".netrc"
    home_secret.write_text(f"machine example.org password {home_secret_text}\n")
    write(example_repo, "sklearn_scores/benchmarks/attacker/__init__.py", hostile_benchmark(secrets, home_secret))
    commit_all(example_repo, "an attacker", author="Mallory <mallory@example.org>")
    workspace.env.update({"SCORE_PLUGINS_SECRETS": str(secrets), "HOME": str(home),
                          "SCORE_PLUGINS_SMTP_URL": f"smtp://mailer:{smtp_secret}@127.0.0.1:9?timeout=2",
                          "SCORE_PLUGINS_SANDBOX": "bwrap"})
    result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg,knn-5")
    assert result["states"] == {"COMPLETED": 2}, result["pairs"]  # its own honest score, 0.5, is still its own
    logs = "".join(p.read_text(errors="replace") for p in workspace.state.glob("runs/*/logs/*.log"))
    attempts = [line for line in logs.splitlines() if line.startswith("ATTEMPT ")]
    assert len(attempts) == 2 * 26, logs[-3000:]
    escaped = [line for line in attempts if "SUCCEEDED" in line]
    assert escaped == [], escaped
    assert "uid 20000" in logs and "seccomp" in logs  # a per-pair user from the sandbox's range
    # nothing planted survives: no forged spool file, no poisoned environment, untouched code and worker
    assert not list(workspace.state.rglob("forged.json")) and not list(workspace.state.rglob("evil.pth"))
    assert not list(Path(workspace.env["SCORE_PLUGINS_ENV_ROOT"]).rglob("evil.pth"))
    board = workspace.json("leaderboard")
    assert {(r["model"], r["benchmark"]): r["score"] for r in board if r["benchmark"] == "attacker"} == {
        ("logreg", "attacker"): 0.5, ("knn-5", "attacker"): 0.5}
    for path in [*workspace.state.rglob("*"), *Path(workspace.path).rglob("*.eml")]:
        if path.is_file():
            data = path.read_bytes()
            for secret in (db_secret, smtp_secret, home_secret_text):
                assert secret.encode() not in data, (secret, path)


def test_forged_and_malformed_reports_are_refused(workspace, example_repo):
    """The plugin writes straight into its report pipe: a score of 42, NaN, a huge line, garbage; then exits 0.
    None of it is a result; the pair fails honestly and the other pairs keep their scores."""
    cases = {
        "forge_42": '{"status": "ok", "score_ceiled": 42.0, "score_raw": 42.0, "ceiling": -1}',
        "forge_nan": '{"status": "ok", "score_ceiled": NaN, "score_raw": 0.5}',
        "forge_string": '{"status": "ok", "score_ceiled": "0.9", "score_raw": 0.9}',
        "forge_huge": '{"status": "ok", "score_ceiled": 0.5, "score_raw": 0.5, "pad": "' + "x" * 300_000 + '"}',
        "forge_garbage": "not json at all",
    }
    for name, line in cases.items():
        write(example_repo, f"sklearn_scores/benchmarks/{name}/__init__.py",
              "import os, sys\nfrom sklearn_scores import benchmark_registry\n\nclass Bench:\n"
              "    def __call__(self, model):\n"
              "        fd = int(sys.argv[sys.argv.index('--report-fd') + 1])\n"
              f"        os.write(fd, ({line!r} + '\\n').encode())\n"
              "        os._exit(0)\n\n"
              f"benchmark_registry['{name}'] = Bench\n")
    commit_all(example_repo, "forged reports")
    result = workspace.json("run", "--repo", str(example_repo), "--base", "HEAD~1", "--models", "logreg",
                            expect=1)
    pairs = {p["benchmark"]: p for p in result["pairs"]}
    for name in cases:
        assert pairs[name]["state"] == "FAILED", pairs[name]
        assert "without a valid result" in pairs[name]["reason"], pairs[name]
    assert workspace.json("leaderboard") == []
