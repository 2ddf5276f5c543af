"""Emails to submitters: compose (Jinja2), an outbox folder first, then SMTP."""
