"""Notifications against a real SMTP server (aiosmtpd, STARTTLS + AUTH, certificate made here)."""

from __future__ import annotations

import email
import json
import signal
import socket
import subprocess
import time
from email import policy

import pytest

from notify.compose import AddressError, PairOutcome, RunReport, compose, parse_address
from notify.outbox import Outbox
from notify.smtp import flush, parse_smtp_url
from tests.conftest import CLI
from tests.services import SmtpServer


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def report(outcomes: list[PairOutcome]) -> RunReport:
    return RunReport("run-1", "a" * 40, "dom", "test", outcomes, build_url="https://jenkins.example.org/job/1/",
                     leaderboard_url="https://leaderboard.example.org/")


@pytest.mark.parametrize("bad", ["ada@example.org\r\nBcc: all@example.org", "ada@example.org\nX: y", "not-an-address",
                                 "a@b@c.org", "<ada@example.org>", "ada@exa mple.org", "", "ada@", "@example.org",
                                 "ada@example.org, eve@example.org"])
def test_bad_addresses_are_refused(bad):
    with pytest.raises(AddressError):
        parse_address(bad)


def test_message_content_encoding_and_log_tail():
    huge = "\n".join(f"log line {i} " + "x" * 50 for i in range(100_000)) + "\nlast line: Überlauf ∞"
    outcomes = [PairOutcome("m1", "b1", "COMPLETED", 0.91234),
                PairOutcome("m2", "b1", "FAILED", None, "score", "ValueError: négatif — ünïcode", huge)]
    msg = compose(report(outcomes), "zoe@example.org", "scores@example.org")
    assert len(msg.as_bytes()) < 60_000  # a huge log is cut to a readable tail
    parsed = email.message_from_bytes(msg.as_bytes(), policy=policy.default)
    text = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()
    assert "m1 on b1: 0.9123" in text and "m2 on b1: FAILED during score" in text
    assert "ValueError: négatif — ünïcode" in text and "last line: Überlauf ∞" in text
    assert "log line 0 " not in text
    assert "https://jenkins.example.org/job/1/" in text and "https://leaderboard.example.org/" in html
    assert parsed["Subject"] == "[score-plugins] run run-1: 1 of 2 failed"
    named = compose(report(outcomes), "zoe@example.org", "scores@example.org")
    named.replace_header("To", str(parse_address("zoe@example.org", "Zoë Ünicode")))
    assert "=?utf-8?" in named.as_string()  # non-ASCII display names are encoded words
    assert email.message_from_string(named.as_string(), policy=policy.default)["To"].addresses[0].display_name \
        == "Zoë Ünicode"


def test_starttls_auth_delivery_exactly_once(tmp_path):
    server = SmtpServer(tmp_path / "smtp")
    try:
        box = Outbox(tmp_path / "outbox")
        for who in ("ada@example.org", "bob@example.org"):
            box.put(compose(report([PairOutcome("m", "b", "COMPLETED", 0.5)]), who, "scores@example.org"))
        # the same message queued again is one file
        box.put(compose(report([PairOutcome("m", "b", "COMPLETED", 0.5)]), "ada@example.org", "scores@example.org"))
        assert len(box.pending()) == 2
        result = flush(box, parse_smtp_url(server.url()))
        assert len(result.sent) == 2 and result.waiting == 0
        assert sorted(m["to"][0] for m in server.messages) == ["ada@example.org", "bob@example.org"]
        again = flush(box, parse_smtp_url(server.url()))
        assert again.sent == [] and len(server.messages) == 2
        # a message already sent is not queued again
        box.put(compose(report([PairOutcome("m", "b", "COMPLETED", 0.5)]), "ada@example.org", "scores@example.org"))
        assert box.pending() == []
    finally:
        server.stop()


def test_wrong_password_keeps_messages_with_a_reason_and_no_password(tmp_path):
    server = SmtpServer(tmp_path / "smtp")
    try:
        box = Outbox(tmp_path / "outbox")
        box.put(compose(report([]), "ada@example.org", "scores@example.org"))
        url = server.url().replace(SmtpServer.PASSWORD, "wrong-secret-pw")
        result = flush(box, parse_smtp_url(url), attempts=2, first_delay=0.1)
        assert result.waiting == 1 and server.messages == []
        [reason] = result.failed.values()
        assert "wrong-secret-pw" not in reason and "localhost" in reason
        error_file = next((tmp_path / "outbox").glob("*.error")).read_text()
        assert error_file.startswith("attempts 2") and "wrong-secret-pw" not in error_file
    finally:
        server.stop()


def test_smtp_down_during_run_then_flush_delivers_each_once(workspace, example_repo, tmp_path):
    port = closed_port()
    probe = SmtpServer(tmp_path / "smtp", port=port)  # only to make the certificate; stopped at once
    url = probe.url()
    probe.stop()
    workspace.env["SCORE_PLUGINS_SMTP_URL"] = url
    proc = workspace.cli("run", "--repo", str(example_repo), "--all", "--models", "logreg", "--benchmarks",
                         "iris-accuracy", "--submitter", "ops@example.org", "--submitter",
                         "evil@example.org\r\nBcc: everyone@example.org", "--format", "json")
    assert proc.returncode == 0, proc.stderr  # email never fails scoring
    result = json.loads(proc.stdout)
    assert result["states"] == {"COMPLETED": 1}
    assert any("evil@example.org" in p and "line break" in p for p in result["problems"])
    assert any("waits in the outbox" in p for p in result["problems"])
    assert SmtpServer.PASSWORD not in proc.stdout + proc.stderr
    waiting = sorted((workspace.state / "outbox").glob("*.eml"))
    assert len(waiting) == 3  # admin (model owner), bob (benchmark owner), ops; not the injected address

    server = SmtpServer(tmp_path / "smtp", port=port)
    try:
        flushed = workspace.json("notify", "flush")
        assert len(flushed["sent"]) == 3 and flushed["waiting"] == 0
        assert sorted(m["to"][0] for m in server.messages) == ["admin@example.org", "bob@example.org",
                                                               "ops@example.org"]
        assert not any(b"everyone@example.org" in m["data"] for m in server.messages)
        assert workspace.json("notify", "flush")["sent"] == []
        assert len(server.messages) == 3
    finally:
        server.stop()


def test_flush_killed_mid_send_sends_nothing_twice_and_loses_nothing(workspace, tmp_path):
    """Killed while the 2nd of 3 messages is on the wire: the 1st is never sent again, the 2nd
    (which the server had not accepted) and the 3rd are sent by the next flush: each arrives once."""
    server = SmtpServer(tmp_path / "smtp", delay=1.5)
    try:
        box = Outbox(workspace.state / "outbox")
        for who in ("ada", "bob", "cyd"):
            box.put(compose(report([]), f"{who}@example.org", "scores@example.org"))
        workspace.env["SCORE_PLUGINS_SMTP_URL"] = server.url()
        proc = subprocess.Popen([str(CLI), "notify", "flush"], cwd=workspace.path, env=workspace.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 30
        while not (len(list(box.sent_dir.glob("*.eml"))) == 1 and box.uncertain()) and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # the 2nd message is on the wire; the server has not answered yet
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(box.uncertain()) == 1 and len(box.pending()) == 1
        time.sleep(2.0)
        assert len(server.messages) == 1
        again = workspace.json("notify", "flush")
        assert len(again["sent"]) == 2 and len(again["recovered"]) == 1 and again["waiting"] == 0
        assert sorted(m["to"][0] for m in server.messages) == ["ada@example.org", "bob@example.org",
                                                               "cyd@example.org"]
        assert workspace.json("notify", "flush")["sent"] == []
    finally:
        server.stop()


def test_infrastructure_failures_alert_the_admin(tmp_path):
    from db.models import Job, Run
    from pipeline.notifications import queue_run_messages

    run = Run(id="run-9", head_commit="b" * 40, domain="dom", executor="slurm", build_url="https://j/9/")
    jobs = [Job(run_id="run-9", pair_key="k1", model="m1", benchmark="b1", submitters=["ada@example.org"],
                state="COMPLETED", score=0.7),
            Job(run_id="run-9", pair_key="k2", model="m2", benchmark="b1", submitters=["ada@example.org"],
                state="NODE_FAIL", reason="node died", log_tail="slurmstepd: error")]
    paths, problems = queue_run_messages(run, jobs, profile="test", outbox_dir=tmp_path, sender="s@example.org",
                                         admin_email="admin@example.org")
    assert problems == [] and len(paths) == 2
    msgs = {str(m["To"]): m for m in (email.message_from_bytes(p.read_bytes(), policy=policy.default) for p in paths)}
    assert "infrastructure alert" in msgs["admin@example.org"]["Subject"]
    alert = msgs["admin@example.org"].get_body(("plain",)).get_content()
    assert "m2 on b1: NODE_FAIL" in alert and "node died" in alert and "m1 on b1" not in alert
    assert msgs["ada@example.org"]["Subject"] == "[score-plugins] run run-9: 1 of 2 failed"
