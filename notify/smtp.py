"""Send the outbox over SMTP with aiosmtplib: SSL, STARTTLS, authentication, timeouts, retries.

Configured by one URL (contract): `smtp://user:pass@host:port`, `smtps://...` (TLS from
the start), `?starttls=true` (upgrade a plain connection), `&timeout=SECONDS`,
`&cafile=PATH` (trust this CA, e.g. a site's own). The password never leaves this module:
errors and logs show `safe_url`.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from notify.outbox import Outbox


class SmtpConfigError(ValueError):
    """The SMTP URL cannot be used."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False
    starttls: bool = False
    timeout: float = 30.0
    cafile: str | None = None

    @property
    def safe_url(self) -> str:
        scheme = "smtps" if self.use_tls else "smtp"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}" + ("?starttls=true" if self.starttls else "")

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cafile) if self.cafile else ssl.create_default_context()


def parse_smtp_url(url: str) -> SmtpSettings:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise SmtpConfigError("SMTP URL must start with smtp:// or smtps://")
    if not parts.hostname:
        raise SmtpConfigError("SMTP URL has no host")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    truthy, falsy = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")
    unknown = sorted(set(query) - {"starttls", "timeout", "cafile"})
    if unknown:
        raise SmtpConfigError(f"SMTP URL has unknown parameter(s) {', '.join(unknown)} (starttls, timeout, cafile)")
    if query.get("starttls", "").lower() not in truthy + falsy:
        raise SmtpConfigError("SMTP URL: starttls must be true or false")
    try:
        port = parts.port or (465 if parts.scheme == "smtps" else 25)
        timeout = float(query.get("timeout", 30))
    except ValueError:
        raise SmtpConfigError("SMTP URL has an invalid port or timeout") from None
    return SmtpSettings(
        host=parts.hostname, port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=parts.scheme == "smtps", starttls=query.get("starttls", "").lower() in truthy,
        timeout=timeout, cafile=query.get("cafile"))


def smtp_from_environment(profile: str, environ: Mapping[str, str] | None = None) -> SmtpSettings | None:
    """`SCORE_PLUGINS_SMTP_<PROFILE>`, else `SCORE_PLUGINS_SMTP_URL`; None: outbox only."""
    environ = os.environ if environ is None else environ
    url = environ.get(f"SCORE_PLUGINS_SMTP_{profile.upper()}") or environ.get("SCORE_PLUGINS_SMTP_URL")
    return parse_smtp_url(url) if url else None


@dataclass
class FlushReport:
    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # file name -> reason
    recovered: list[str] = field(default_factory=list)  # left in `sending/` by a crashed flush, sent again
    waiting: int = 0

    def to_json(self) -> dict:
        return {"sent": self.sent, "failed": self.failed, "recovered": self.recovered, "waiting": self.waiting}


def _describe(exc: BaseException, settings: SmtpSettings) -> str:
    text = str(exc) or type(exc).__name__
    if settings.password:
        text = text.replace(settings.password, "***")
    return f"{type(exc).__name__}: {text} ({settings.safe_url})"


async def _send_all(outbox: Outbox, settings: SmtpSettings, attempts: int, first_delay: float) -> FlushReport:
    # A message a crashed flush left on the wire goes first, with the same Message-ID: an SMTP
    # server that had not answered 250 has discarded it, and one that had can drop the duplicate.
    report = FlushReport(recovered=[p.name for p in outbox.uncertain()])
    queue = outbox.uncertain() + outbox.pending()
    delay = first_delay
    for attempt in range(1, attempts + 1):
        if not queue:
            break
        try:
            client = aiosmtplib.SMTP(hostname=settings.host, port=settings.port, use_tls=settings.use_tls,
                                     start_tls=settings.starttls if not settings.use_tls else False,
                                     timeout=settings.timeout, tls_context=settings.tls_context())
            async with client:
                if settings.username:
                    await client.login(settings.username, settings.password or "")
                retry: list[Path] = []
                for path in queue:
                    claimed = outbox.claim(path)  # in `sending/` while on the wire: never sent twice
                    message = outbox.read(claimed)
                    try:
                        await client.send_message(message)
                    except aiosmtplib.SMTPRecipientsRefused as exc:  # final: this address is refused
                        outbox.release(claimed, _describe(exc, settings), final=True)
                        report.failed[path.name] = _describe(exc, settings)
                        continue
                    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPDataError) as exc:
                        outbox.release(claimed, _describe(exc, settings))
                        report.failed[path.name] = _describe(exc, settings)
                        retry.append(outbox.root / path.name)
                        continue
                    outbox.mark_sent(claimed)
                    report.sent.append(path.name)
                    report.failed.pop(path.name, None)
                queue = retry
        except (OSError, asyncio.TimeoutError, aiosmtplib.SMTPException) as exc:
            reason = _describe(exc, settings)
            for path in queue:
                current = outbox.root / path.name
                if (outbox.sending_dir / path.name).exists():  # claimed, but the connection failed: not sent
                    current = outbox.release(outbox.sending_dir / path.name, reason)
                elif current.exists():
                    outbox.mark_failed(current, reason)
                report.failed[path.name] = reason
        if queue and attempt < attempts:
            await asyncio.sleep(delay)
            delay *= 2
    report.waiting = len(outbox.pending())
    return report


def flush(outbox: Outbox, settings: SmtpSettings, *, attempts: int = 3, first_delay: float = 1.0) -> FlushReport:
    """Send every waiting message; failures stay in the outbox with their reason, retried with back-off."""
    return asyncio.run(_send_all(outbox, settings, attempts, first_delay))
