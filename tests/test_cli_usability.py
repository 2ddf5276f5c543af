"""What a user meets at the command line: settings checked alike in every layer, profiles checked by every
command, one line for bad input, nothing silently accepted, the leaderboard page's arithmetic and colours."""

from __future__ import annotations

import json
import tomllib

from pipeline.leaderboard.views import colour


def one_line_exit_2(proc) -> None:  # noqa: ANN001
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_settings_are_checked_alike_in_every_layer(workspace, tmp_path):
    printed = workspace.cli("config", check=True).stdout  # TOML that pastes into the site file
    site = tmp_path / "site.toml"
    site.write_text(printed)
    assert tomllib.loads(printed)["score-plugins"]["mem"] == "4G"
    workspace.env["SCORE_PLUGINS_CONFIG"] = str(site)
    assert workspace.json("config")["mem"] == "4G"
    for name, value, text in (("SCORE_PLUGINS_MEM", "lots", "not a size"),
                              ("SCORE_PLUGINS_PARTITION", "a b", "not a Slurm name"),
                              ("SCORE_PLUGINS_MEMM", "4G", "unknown variable(s) SCORE_PLUGINS_MEMM")):
        env = dict(workspace.env, **{name: value})
        proc = workspace.__class__(workspace.path, env).cli("config")
        one_line_exit_2(proc)
        assert text in proc.stderr
    site.write_text('[score-plugins]\npartition = "a b"\n')
    one_line_exit_2(workspace.cli("config"))
    site.write_text('[score-plugins]\nmemory = "4G"\n')
    proc = workspace.cli("config")
    one_line_exit_2(proc)
    assert "unknown settings memory" in proc.stderr


def test_profiles_urls_and_outbox(workspace, example_repo):
    for args in (("detect", "--repo", str(example_repo), "--base", "HEAD~1"), ("config",)):
        proc = workspace.cli(*args, "--profile", "nonsense")
        one_line_exit_2(proc)
        assert "unknown profile 'nonsense'" in proc.stderr
    workspace.env["SCORE_PLUGINS_SMTP_URL"] = "smtp://127.0.0.1:25?starttls=maybe"
    proc = workspace.cli("notify", "flush")
    one_line_exit_2(proc)
    assert "starttls must be true or false" in proc.stderr
    del workspace.env["SCORE_PLUGINS_SMTP_URL"]
    proc = workspace.cli("notify", "flush")  # nothing waits and no server: nothing is wrong
    assert proc.returncode == 0 and "nothing waits" in proc.stdout
    workspace.env["SCORE_PLUGINS_DB_LOCAL"] = "mysql://u:secret@127.0.0.1/x"
    proc = workspace.cli("leaderboard")
    one_line_exit_2(proc)
    assert "supports postgresql:// and sqlite:///" in proc.stderr and "secret" not in proc.stderr


def test_read_only_commands_say_where_they_looked_and_render_needs_an_empty_folder(workspace, example_repo,
                                                                                  tmp_path):
    proc = workspace.cli("leaderboard")
    one_line_exit_2(proc)
    assert "no local database at" in proc.stderr and "looked for .score-plugins" in proc.stderr
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    proc = workspace.cli("render", "--repo", str(example_repo), "--all", "--out", str(occupied))
    one_line_exit_2(proc)
    assert "folder is not empty" in proc.stderr and (occupied / "keep.txt").read_text() == "mine"
    # a command run from a sub-folder finds the same state folder (and database)
    workspace.json("run", "--repo", str(example_repo), "--all", "--models", "logreg", "--benchmarks",
                   "iris-accuracy")
    sub = workspace.path / "deeper" / "still"
    sub.mkdir(parents=True)
    board = workspace.__class__(sub, workspace.env).cli("leaderboard", "--format", "json", check=True)
    assert [r["model"] for r in json.loads(board.stdout)] == ["logreg"]


def test_leaderboard_colours_are_absolute_and_tell_the_top_of_the_scale_apart():
    """0.85 and 0.98 (where good models differ) get clearly different hues; the scale is absolute and its
    hue never goes back down as the score rises; beyond [0, 1] (engineering raw scores) is clamped."""
    def hue(value: float) -> int:
        return int(colour(value).split("(")[1].split(",")[0])

    assert hue(0.98) - hue(0.85) >= 40 and hue(0.0) == 0 and hue(0.85) == 110
    hues = [hue(i / 100) for i in range(101)]
    assert hues == sorted(hues) and colour(7.5) == colour(1.0) and colour(-1) == colour(0.0)
