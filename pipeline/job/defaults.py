"""Numbers the manifest defaults to and the modules that enforce them share. It imports nothing, so that the
manifest stays cheap to import in each of a pair's two processes (they start once per pair)."""

UID_BASE = 2_000_000_000  # per-pair users (root only): UID_BASE .. UID_BASE + UID_COUNT - 1, never in /etc/passwd
UID_COUNT = 4096
DEFAULT_CAP = 4 << 30  # bytes one message between a pair's two processes may carry (the `boundary_cap` setting)
