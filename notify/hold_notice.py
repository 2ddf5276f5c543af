"""The message that tells a plugin's owners, the change's author and the administrator that a change to the
plugin is held until an administrator approves it. Plain text only; every piece of git or plugin text in it is
shown inert (pipeline/inert.py: control, format and separator characters escaped), never as markup."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate

from notify.compose import message_id, parse_address
from pipeline.inert import inert


@dataclass(frozen=True)
class HeldChange:
    hold_id: int
    plugin: str  # <domain root>/<type>/<folder>
    commit: str
    author: str
    reason: str


def _cut(text: str, cap: int = 500) -> str:
    """`text` cut at `cap` characters and made inert by pipeline/inert.py (the one helper for every screen and
    message): git and plugin text cannot move a terminal's cursor or reorder a line."""
    return inert(text[:cap], lines=False) + ("..." if len(text) > cap else "")


def compose_hold_notice(holds: list[HeldChange], recipient: str, sender: str, admin: bool = False) -> EmailMessage:
    """One message to one recipient about the changes held in one run (owners, author and administrator alike;
    the owners' addresses are not listed: the author reads this too)."""
    to = parse_address(recipient)
    plugins = sorted({h.plugin for h in holds})
    lines = ["A change to a plugin was not scored: its author is not among the plugin's owners (the authors of",
             "its earlier commits, and the site's maintainers). Every pair that uses the plugin waits, unscored,",
             "until an administrator approves the change; the scores already on the leaderboard stay as they are.",
             ""]
    for h in holds:
        lines += [f"Plugin:  {_cut(h.plugin)}", f"Commit:  {_cut(h.commit)} by {_cut(h.author)}",
                  f"Why:     {_cut(h.reason)}", f"Hold:    {h.hold_id}", ""]
    ids = " ".join(str(h.hold_id) for h in holds)
    lines += ["An administrator reviews the change, then approves it:", "",
              f"    score-plugins approve {ids} --by NAME", "",
              "(`--owner` also makes the author an owner of the plugin; `score-plugins holds` lists what waits.)",
              "The next run of the change (or `score-plugins rerun --failed RUN`) scores it."]
    if not admin:
        lines += ["", "If this change is yours, nothing needs doing on your side but waiting for the approval."]
    msg = EmailMessage()
    msg["From"] = parse_address(sender, "score-plugins")
    msg["To"] = to
    msg["Subject"] = (f"[score-plugins] held for approval: a change to {_cut(', '.join(plugins), 200)} "
                      "by someone who is not among its owners")
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id(f"hold-{'-'.join(str(h.hold_id) for h in holds)}", to.addr_spec)
    msg.set_content("\n".join(lines) + "\n")
    return msg
