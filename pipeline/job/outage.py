"""Whose failure is it: a lock, an environment build or a download that failed is the plugin's only when the
resolver found no solution or the plugin's own build failed; anything else (an unreachable index, TLS, DNS, a
timeout, a full disk, a killed solver, a message we do not know) is infrastructure.

Infrastructure failures are never cached as the plugin's, never mailed to its submitter, and make the run exit 3
so that the next build tries again; the administrator reads which kind in the console and in the run's record.
The default is infrastructure on purpose: an unrecognised error costs a retry and an admin's look, a wrong blame
costs a stranger's trust. The plugin's markers win over the outage's, so a build script cannot print its way out
of its own failure (it can only print its way into one).

Standard library only: the worker on the node classifies its environment builds with the same rules.
"""

from __future__ import annotations

import re

# The resolver's or the plugin's own: uv (`No solution found`, a build backend that ran and failed, a git
# repository or revision that does not exist), rattler (`SolverError`, `Cannot solve the request`), and the
# environment step's own refusals of what a build did.
PLUGIN_MARKERS = (
    re.compile(r"No solution found when resolving"),
    re.compile(r"The build backend returned an error"),
    re.compile(r"Build backend failed"),
    re.compile(r"SolverError|Cannot solve the request because"),
    re.compile(r"[Rr]epository (?:'[^']*' )?not found|couldn't find remote ref|did not match any file"),
    re.compile(r"score-plugins: the build changed the environment's interpreter; refused"),
    re.compile(r"score-plugins: the environment's python points outside it; refused"),
)

# What kind of outage, in the words an administrator searches for (the first that matches names it).
OUTAGE_KINDS = (
    ("TLS error", re.compile(r"certificate|\bTLS\b|\bSSL\b|tls handshake|UnknownIssuer|invalid peer", re.I)),
    ("DNS failure", re.compile(r"dns error|failed to lookup address|Name or service not known|"
                               r"Temporary failure in name resolution|Could not resolve host|nodename nor servname",
                               re.I)),
    ("disk full", re.compile(r"No space left on device|os error 28|Disk quota exceeded|ENOSPC", re.I)),
    ("timeout", re.compile(r"timed out|\btimeout\b|deadline has elapsed", re.I)),
    ("index unreachable", re.compile(r"Connection refused|tcp connect error|Network is unreachable|"
                                     r"No route to host|Connection reset|error sending request|Failed to fetch|"
                                     r"Failed to download|HTTP status server error|\b50[0-4]\b|"
                                     r"Could not connect|connection (?:closed|aborted)", re.I)),
)


def is_plugins(text: str) -> bool:
    """Whether a failure's text says the plugin's requirements have no solution or its own build failed."""
    return any(marker.search(text) for marker in PLUGIN_MARKERS)


def outage_kind(text: str, returncode: int | None = None) -> str:
    """What kind of infrastructure failure `text` describes: a killed process (a negative return code, or a
    shell's 128 + the signal), else the first kind whose words it has, else "unrecognised failure"."""
    if returncode is not None and (returncode < 0 or 128 < returncode < 160):
        number = -returncode if returncode < 0 else returncode - 128
        return f"killed by signal {number}"
    for kind, pattern in OUTAGE_KINDS:
        if pattern.search(text):
            return kind
    return "unrecognised failure"


def classify(text: str, returncode: int | None = None) -> str | None:
    """None when the failure is the plugin's; else the kind of infrastructure failure (a killed solver is
    infrastructure whatever it printed: the plugin's markers are only read from a process that ended itself)."""
    killed = returncode is not None and (returncode < 0 or 128 < returncode < 160)
    if not killed and is_plugins(text):
        return None
    return outage_kind(text, returncode)


def key_line(text: str, limit: int = 400) -> str:
    """The line of a failure that says most: the deepest `cause:` of uv's chain, else the last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line for line in lines if line.startswith("cause:") or line.startswith("Caused by:")]
    chosen = (causes or lines or [""])[-1]
    return chosen[:limit]
