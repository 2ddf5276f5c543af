"""The rules a board follows, as a preset and single rules over it: brain-score.org's (the default for the shipped
Brain-Score hierarchies), or ours for a lab (the default elsewhere). Each rule names the website's line it follows
(github brain-score/brain-score.web: benchmarks/sql/mv.sql, benchmarks/views/index.py, leaderboard.py, models.py)
or, for ours, why a lab may prefer it. The README's leaderboard section lists them all."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal

from pipeline.errors import BadInput


@dataclass(frozen=True)
class Rules:
    preset: str
    # which score of a model x benchmark counts: "highest_raw" (the row with the highest raw score, whatever its
    # date, mv.sql 336-341) or "newest" (the latest run's, so a re-score with a fix replaces a lucky one)
    leaf: str
    # a benchmark type no admin has shown: "hidden" (the website's default, models.py 112: it counts in no average,
    # mv.sql 483) or "shown" (a lab's new benchmark counts as soon as it is scored)
    new_types: str
    # a shown benchmark no model has a result for: "count" (every model gets 0 for it: mv.sql 366 crosses every
    # model with every leaf, 496 and 508 divide by all of them) or "drop" (left out until some model has one, so
    # it does not pull every model down while it is being scored)
    unscored: str
    # "website": 3 decimals, then 2 (mv.sql 1072-1077, index.py 239-242); "once": 2 decimals half-up
    rounding: str
    # a model with no domain average (engineering only): not listed (index.py 227-236) or listed without a rank
    list_without_average: bool
    # a model is listed on its own domain's board only (mv.sql 1052, index.py 60) or on every board it has results on
    other_domains: bool
    # benchmarks by the identifier they run as (the website's key, database.py 358) or by their registry name
    identifiers: str


PRESETS = {
    "brain-score": Rules("brain-score", leaf="highest_raw", new_types="hidden", unscored="count", rounding="website",
                         list_without_average=False, other_domains=False, identifiers="runtime"),
    "lab": Rules("lab", leaf="newest", new_types="shown", unscored="drop", rounding="once",
                 list_without_average=True, other_domains=True, identifiers="registry"),
}
CHOICES = {"leaf": ("highest_raw", "newest"), "new_types": ("hidden", "shown"), "unscored": ("count", "drop"),
           "rounding": ("website", "once"), "identifiers": ("runtime", "registry")}
FLAGS = ("list_without_average", "other_domains")


def check_table(table: object, where: str) -> None:
    """A hierarchy file's `[D.rules]` table: `preset` and single rules with their allowed values."""
    if not isinstance(table, dict):
        raise BadInput(f"{where}: rules must be a table")
    for key, value in table.items():
        if key == "preset":
            ok = value in PRESETS
        elif key in CHOICES:
            ok = value in CHOICES[key]
        elif key in FLAGS:
            ok = isinstance(value, bool)
        else:
            ok = False
        if not ok:
            raise BadInput(f"{where}: rules.{key} = {value!r} is not one of: preset ({', '.join(PRESETS)}), "
                           + ", ".join(f"{k} ({'/'.join(v)})" for k, v in CHOICES.items())
                           + ", " + ", ".join(f"{k} (true/false)" for k in FLAGS))


def make_rules(table: dict | None, default: str, forced: str | None = None) -> Rules:
    """The rules from a hierarchy's table over its preset (or `default`); `forced` (a command's `--rules`) names a
    preset that replaces the table's."""
    table = table or {}
    if forced:
        return PRESETS[forced]
    rules = PRESETS[table.get("preset", default)]
    return replace(rules, **{k: v for k, v in table.items() if k != "preset"})


def _pg_numeric(value: float) -> Decimal:
    """A float as Postgres turns it into numeric: 15 significant digits (float8 -> numeric, DBL_DIG)."""
    return Decimal(format(value, ".15g"))


def website_text(value: float) -> str:
    """The score as mv.sql stores it for display (1072-1077): 1 decimal from 1 up, else 3 decimals (Postgres
    rounds half away from zero), leading zero trimmed below 1 ('.225')."""
    number = _pg_numeric(value)
    if number >= 1:
        return str(number.quantize(Decimal("0.1"), rounding="ROUND_HALF_UP"))
    text = str(number.quantize(Decimal("0.001"), rounding="ROUND_HALF_UP"))
    return text[1:] if text.startswith("0.") else text


def shown(value: float, rules: Rules, places: int = 2) -> float:
    """The value a board shows and ranks by: under the website's rules the 3-decimal text rounded half-up to 2
    (index.py 239-242 ranks by it, leaderboard.py 419 shows it); under ours, once, half-up."""
    if rules.rounding == "website":
        return float(Decimal(website_text(value)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))
    exact = _pg_numeric(value).quantize(Decimal("1e-9"), rounding=ROUND_HALF_UP)
    return float(exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))
