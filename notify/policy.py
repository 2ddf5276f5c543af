"""Whom a profile may email: mail follows the database's profile, not whichever SMTP variable the agent carries.

Only the profiles named in `mail_submitters` (by default `prod`) email submitters. Every other profile (dev, test,
local) delivers only to `mail_allow` (addresses, or `@domain` for a whole domain) and to `admin_email`; its
other messages are written to the outbox's `held/` folder, readable there, and never sent by any flush.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MailPolicy:
    profile: str
    submitters: bool  # this profile emails everyone its runs concern
    allow: tuple[str, ...] = ()  # lower-case addresses and @domains every profile may email

    def allows(self, address: str) -> bool:
        if self.submitters:
            return True
        address = address.strip().lower()
        domain = "@" + address.rpartition("@")[2]
        return address in self.allow or domain in self.allow

    def describe(self) -> str:
        if self.submitters:
            return "every submitter"
        if self.allow:
            return f"only {', '.join(self.allow)}; messages to anyone else are kept in the outbox's held/ folder"
        return "nobody: every message is kept in the outbox's held/ folder"


def mail_policy(profile: str, mail_submitters: list[str] | tuple[str, ...], mail_allow: list[str] | tuple[str, ...],
                admin_email: str = "") -> MailPolicy:
    """The policy of `profile`; `admin_email` (the site's own operator) is always allowed."""
    allow = [a.strip().lower() for a in (*mail_allow, admin_email) if a and a.strip()]
    return MailPolicy(profile, profile in mail_submitters, tuple(dict.fromkeys(allow)))
