"""Notifications against a real SMTP server (aiosmtpd, STARTTLS + AUTH, certificate made here)."""

from __future__ import annotations

import email
import json
import signal
import socket
import subprocess
from pathlib import Path
from email import policy

import pytest

from notify.compose import AddressError, PairOutcome, RunReport, compose, parse_address
from notify.outbox import Outbox
from notify.smtp import flush, parse_smtp_url
from tests.conftest import CLI, wait_for
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
    workspace.env["SCORE_PLUGINS_MAIL_SUBMITTERS"] = "local"  # this profile's own mail setting: it emails them
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
        workspace.env["SCORE_PLUGINS_MAIL_SUBMITTERS"] = "local,test"
        ids = {who: message_id(next(p for p in box.pending() if f"{who}@" in p.read_text())) for who in ("ada", "bob")}
        proc = subprocess.Popen([str(CLI), "notify", "flush"], cwd=workspace.path, env=workspace.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # readiness: the server holds the 2nd message's DATA and has not answered (it waits `delay`)
        wait_for(lambda: server.receiving == 2, 30, "the 2nd message to reach the server")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(box.uncertain()) == 1 and len(box.pending()) == 1
        wait_for(lambda: server.aborted == 1, 30, "the server to see the client go")
        assert len(server.messages) == 1
        again = workspace.json("notify", "flush")
        assert len(again["sent"]) == 2 and len(again["recovered"]) == 1 and again["waiting"] == 0
        assert sorted(m["to"][0] for m in server.messages) == ["ada@example.org", "bob@example.org",
                                                               "cyd@example.org"]
        assert workspace.json("notify", "flush")["sent"] == []
        # the message sent again after the crash is the same message: its Message-ID did not change
        received = {m["to"][0].split("@")[0]: message_id_of(m["data"]) for m in server.messages}
        assert received["bob"] == ids["bob"] and received["ada"] == ids["ada"]
    finally:
        server.stop()


def message_id_of(data: bytes) -> str:
    from email import message_from_bytes

    return message_from_bytes(data)["Message-ID"]


def message_id(path: Path) -> str:
    return message_id_of(path.read_bytes())


def test_smtps_profile_url_and_flush_exit_codes(workspace, tmp_path):
    """smtps:// (TLS from the first byte), SCORE_PLUGINS_SMTP_<PROFILE> chosen over SCORE_PLUGINS_SMTP_URL,
    and `notify flush` exits 0 (sent or nothing to send), 2 (messages wait, no server configured), 3 (the
    server is down: they keep waiting)."""
    box = Outbox(workspace.state / "outbox")
    workspace.env["SCORE_PLUGINS_MAIL_SUBMITTERS"] = "local,test"
    assert workspace.cli("notify", "flush").returncode == 0  # nothing waits: nothing is wrong
    box.put(compose(report([]), "ada@example.org", "scores@example.org"))
    unconfigured = workspace.cli("notify", "flush")
    assert unconfigured.returncode == 2 and "1 message wait" in unconfigured.stderr
    workspace.env["SCORE_PLUGINS_SMTP_URL"] = f"smtp://localhost:{closed_port()}?timeout=2"
    down = workspace.cli("notify", "flush", "--format", "json")
    assert down.returncode == 3 and json.loads(down.stdout)["waiting"] == 1
    server = SmtpServer(tmp_path / "smtps", implicit_tls=True)
    try:
        workspace.env["SCORE_PLUGINS_SMTP_TEST"] = server.url()  # the test profile's own server wins
        sent = workspace.cli("notify", "flush", "--profile", "test", "--format", "json")
        assert sent.returncode == 0, sent.stderr
        assert len(json.loads(sent.stdout)["sent"]) == 1 and [m["to"] for m in server.messages] == [["ada@example.org"]]
        assert server.PASSWORD not in sent.stdout + sent.stderr
    finally:
        server.stop()


def test_infrastructure_failures_alert_the_admin(tmp_path):
    from db.models import Job, Run
    from pipeline.stages.notifications import queue_run_messages

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


def test_mail_follows_the_profile_and_a_backlog_is_sorted_before_it_is_sent(tmp_path):
    """What waits is judged before the first message goes: a dev message to a submitter is held (never sent), one
    older than mail_max_age_hours expires, one whose every pair a newer message to the same person reports is
    superseded; the rest is sent once. Each set aside keeps its reason; none comes back when queued again."""
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    from pipeline.config import load_settings
    from pipeline.stages.notifications import flush_outbox

    settings = load_settings({"state_dir": str(tmp_path / "state"), "mail_allow": "team@example.org"}, environ={})
    box = Outbox(settings.outbox_dir)
    now = datetime.now(timezone.utc)

    def queue(run_id: str, profile: str, to: str, pairs: list[tuple[str, str]], hours_ago: float) -> str:
        msg = compose(RunReport(run_id, "a" * 40, "dom", profile, [PairOutcome(m, b, "FAILED") for m, b in pairs]),
                      to, "scores@example.org")
        msg.replace_header("Date", format_datetime(now - timedelta(hours=hours_ago)))
        return box.put(msg).name

    stale = queue("run-1", "prod", "ada@example.org", [("m3", "b1")], 24 * 5)
    older = queue("run-2", "prod", "ada@example.org", [("m1", "b1"), ("m1", "b2")], 2)
    other = queue("run-3", "prod", "ada@example.org", [("m2", "b1")], 3)
    newer = queue("run-4", "prod", "ada@example.org", [("m1", "b1"), ("m1", "b2"), ("m1", "b3")], 1)
    dev_to_submitter = queue("run-5", "dev", "ada@example.org", [("m9", "b9")], 1)
    dev_to_team = queue("run-6", "dev", "team@example.org", [("m9", "b9")], 1)
    server = SmtpServer(tmp_path / "smtp")
    try:
        report = flush_outbox(settings, "prod", parse_smtp_url(server.url()))
        assert sorted(report["sent"]) == sorted([other, newer, dev_to_team])
        assert sorted(m["to"][0] for m in server.messages) == ["ada@example.org", "ada@example.org",
                                                               "team@example.org"]
        assert list(report["held"]) == [dev_to_submitter] and "dev profile does not email ada@example.org" in \
            report["held"][dev_to_submitter]
        assert "mail_max_age_hours (72)" in report["expired"][stale]
        assert report["expired"][older].startswith("superseded")
        assert box.reason(box.expired_dir / older).startswith("superseded")
        assert flush_outbox(settings, "prod", parse_smtp_url(server.url()))["sent"] == []
        queue("run-2", "prod", "ada@example.org", [("m1", "b1"), ("m1", "b2")], 2)  # queued again: stays expired
        assert box.pending() == [] and len(server.messages) == 3
    finally:
        server.stop()
