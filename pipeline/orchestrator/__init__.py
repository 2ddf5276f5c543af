"""The orchestrator: one request through every stage (detect -> plan -> render -> submit -> watch -> ingest ->
notify). It sits above `stages/`, `capacity/`, `admin/` and `leaderboard/` and imports them; none of them imports
it back (tests/test_layout.py)."""
