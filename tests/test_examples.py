"""`examples create`: a real repository with three commits by three submitters."""

from pathlib import Path

from tests.conftest import git


def test_examples_create_writes_three_commits(workspace):
    proc = workspace.cli("examples", "create", "repo", check=True)
    repo = Path(proc.stdout.strip())
    log = git(repo, "log", "--format=%ae %s").splitlines()
    assert [line.split()[0] for line in log] == ["bob@example.org", "ada@example.org", "admin@example.org"]
    files = git(repo, "ls-files").splitlines()
    for plugin_type in ("models", "benchmarks", "data", "metrics"):
        assert any(f.startswith(f"sklearn_scores/{plugin_type}/") and f.endswith("/__init__.py") for f in files)
    assert sum(f.endswith("test.py") for f in files) >= 8
    assert sum(f.endswith("requirements.txt") for f in files) >= 8


def test_examples_create_refuses_a_non_empty_folder(workspace):
    (workspace.path / "taken").mkdir()
    (workspace.path / "taken" / "file").write_text("x")
    proc = workspace.cli("examples", "create", "taken")
    assert proc.returncode == 2
    assert "not empty" in proc.stderr
