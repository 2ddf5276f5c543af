"""One clear message per submitter per run, plain text and HTML, from Jinja2 templates."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from pipeline.inert import inert, inert_value  # the one helper that shows plugin text inert (a leaf module)

TEMPLATES = Path(__file__).parent / "templates"
# finalize: every value a template prints (ids, reasons, log tails, problems) is made inert first: a control or
# bidirectional character reaches neither part of a message as it is (the HTML part then escapes markup too)
_env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined, finalize=inert_value,
                   autoescape=select_autoescape(["html", "html.j2"], default_for_string=True), trim_blocks=True, lstrip_blocks=True)


class AddressError(ValueError):
    """An email address that cannot be used safely."""


LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&*+/=?^_`{|}~-]+)*$")
DOMAIN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def parse_address(text: str, display_name: str = "") -> Address:
    """One plain `local@domain` address; CR, LF and anything else are refused (no header injection).

    The display name may be any Unicode (it is encoded by the email package); the
    address itself is plain ASCII, which every SMTP server accepts.
    """
    if any(c in text for c in "\r\n\x00") or any(c in display_name for c in "\r\n\x00"):
        raise AddressError(f"address {text!r} contains a line break")
    text = text.strip()
    local, at, domain = text.rpartition("@")
    if not at or len(text) > 254 or not LOCAL_PART.match(local) or len(local) > 64 or not DOMAIN.match(domain):
        raise AddressError(f"{text!r} is not an email address")
    return Address(display_name=display_name, username=local, domain=domain)


@dataclass
class PairOutcome:
    model: str
    benchmark: str
    state: str
    score: float | None = None
    stage: str | None = None
    reason: str | None = None
    log_tail: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED" and self.score is not None


@dataclass
class RunReport:
    run_id: str
    commit: str
    domain: str
    profile: str
    outcomes: list[PairOutcome] = field(default_factory=list)
    build_url: str = ""
    leaderboard_url: str = ""
    skipped: int = 0
    plugin_problems: list[str] = field(default_factory=list)  # found before scoring (syntax errors, bad ids)
    standings: list[dict] = field(default_factory=list)  # the submitter's models on the leaderboard after the run
    cancelled: str = ""  # why an administrator's signal stopped the run (Ctrl-C, SIGTERM, SIGHUP)
    usage: dict = field(default_factory=dict)  # this submitter's attempts, escalations, hours used vs requested
    attempt_notes: list[str] = field(default_factory=list)  # "model on benchmark: small OOM -> medium ..."
    sandbox: str = "bwrap"  # off: the plugins ran unconfined, and the message says so
    network: str = ""  # host: the plugins reached the node's own network, and the message says so


def message_id(run_id: str, recipient: str) -> str:
    """Stable per run and recipient, so a re-sent message is recognisably the same one."""
    digest = hashlib.sha256(f"{run_id}\0{recipient.lower()}".encode()).hexdigest()[:20]
    return f"<{run_id}.{digest}@score-plugins>"


def compose(report: RunReport, recipient: str, sender: str, tail_lines: int = 20, alert: bool = False
            ) -> EmailMessage:
    """The message for one submitter: every pair of theirs, with score or failure, stage and log tail.

    `alert`: the admin's message about infrastructure failures (same body, its own subject and id).
    """
    to = parse_address(recipient)
    outcomes = sorted(report.outcomes, key=lambda o: (o.ok, o.model, o.benchmark))
    rows = [{"model": o.model, "benchmark": o.benchmark, "state": o.state, "score": o.score, "stage": o.stage,
             "reason": o.reason, "ok": o.ok, "tail": _tail(o.log_tail, tail_lines)} for o in outcomes]
    failed = [r for r in rows if not r["ok"]]
    context = {"report": report, "scored": [r for r in rows if r["ok"]], "failed": failed,
               "recipient": to.addr_spec}
    msg = EmailMessage()
    msg["From"] = parse_address(sender, "score-plugins")
    msg["To"] = to
    msg["Subject"] = inert(f"[score-plugins] infrastructure alert, run {report.run_id}: {len(failed)} pair(s) "
                           "failed for infrastructure reasons (lost, or no environment)"
                           if alert else f"[score-plugins] run {report.run_id}: {subject_status(report, rows, failed)}",
                           lines=False)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id(report.run_id + ("-alert" if alert else ""), to.addr_spec)
    msg["X-Score-Plugins-Run"] = inert(report.run_id, lines=False)
    msg["X-Score-Plugins-Profile"] = report.profile  # whose policy decides where it may go (notify.policy)
    if not alert and report.outcomes:  # which pairs it reports: a newer message about all of them supersedes it
        msg["X-Score-Plugins-Pairs"] = " ".join(pair_tokens(report.outcomes))
    msg.set_content(_env.get_template("run_report.txt.j2").render(**context))
    msg.add_alternative(_env.get_template("run_report.html.j2").render(**context), subtype="html")
    return msg


def pair_tokens(outcomes: list[PairOutcome]) -> list[str]:
    """A short digest per (model, benchmark) pair: ids may hold any character, a digest is header-safe."""
    return sorted({hashlib.sha256(f"{o.model}\0{o.benchmark}".encode()).hexdigest()[:12] for o in outcomes})


def subject_status(report: RunReport, rows: list[dict], failed: list[dict]) -> str:
    """What happened, in the subject's words: cancelled by an administrator; plugin problems with nothing
    scored; all scored; or how many failed; and "(sandbox off)" whenever the plugins ran unconfined, "(node network)"
    whenever they shared the node's own network (sandbox_network = "host")."""
    status = _subject_status(report, rows, failed)
    if report.sandbox == "off":
        return f"{status} (sandbox off)"
    return f"{status} (node network)" if report.network == "host" else status


def _subject_status(report: RunReport, rows: list[dict], failed: list[dict]) -> str:
    scored = len(rows) - len(failed)
    if report.cancelled:
        return f"cancelled by an administrator; {scored} of {len(rows)} scored" if rows else \
            "cancelled by an administrator"
    problems = f"{len(report.plugin_problems)} plugin problem(s)" if report.plugin_problems else ""
    if not rows:
        return "plugin problems, nothing scored" if problems else "nothing scored"
    held = sum(r["state"] == "HELD" for r in failed)  # waiting for an administrator's approval, not failed
    status = ", ".join(part for part in (f"{len(failed) - held} of {len(rows)} failed" if len(failed) > held else "",
                                         f"{held} of {len(rows)} held for approval" if held else "") if part) \
        or "all scored"
    return f"{status}, {problems}" if problems else status


def _tail(text: str | None, lines: int) -> str:
    if not text:
        return ""
    kept = text.splitlines()[-lines:]
    return "\n".join(line[:300] for line in kept)
