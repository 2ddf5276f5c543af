"""`notify flush`: the email outbox."""

from __future__ import annotations

import sys


from pipeline.cli.app import Command, common, _count, main
from pipeline.console import err, out
from pipeline.errors import BadInput


@main.group()
def notify() -> None:
    """The email outbox."""


@notify.command("flush")
@common(prod=False)
def notify_flush(cmd: Command) -> None:
    """Send what waits in the outbox over SMTP (SCORE_PLUGINS_SMTP_URL or _<PROFILE>): only what the profile may
    send (mail_submitters, mail_allow), and not a stale or superseded backlog (mail_max_age_hours)."""
    from notify.outbox import Outbox
    from notify.smtp import SmtpConfigError, smtp_from_environment
    from pipeline.stages.notifications import flush_outbox

    outbox = Outbox(cmd.settings.outbox_dir)
    try:
        smtp = smtp_from_environment(cmd.profile)
    except SmtpConfigError as exc:
        raise BadInput(str(exc)) from None
    if smtp is None:
        waiting = len(outbox.pending())
        if not waiting:  # nothing to send: nothing is wrong
            out.print(f"nothing waits in {outbox.root}", highlight=False)
            return
        raise BadInput(f"no SMTP server configured (SCORE_PLUGINS_SMTP_URL); {_count(waiting, 'message')} "
                       f"wait in {outbox.root}")
    report = flush_outbox(cmd.settings, cmd.profile, smtp)

    def people() -> None:
        out.print(f"sent {len(report['sent'])} (of which {len(report['recovered'])} left mid-send by an earlier "
                  f"flush), waiting {report['waiting']}, held {len(report['held'])}, expired "
                  f"{len(report['expired'])}", highlight=False)
        for name, reason in {**report["held"], **report["expired"], **report["failed"]}.items():
            err.print(f"{name}: {reason}", highlight=False)

    cmd.emit(report, people)
    if report["waiting"]:
        sys.exit(3)
