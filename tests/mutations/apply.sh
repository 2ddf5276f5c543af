#!/usr/bin/env bash
# Apply each hand-made breakage (tests/mutations/breakages.py) one at a time, run the test that guards it, restore the
# file, and fail when a guard stays green, a breakage cannot be applied, or a guard is red on the unbroken tree.
# Usage: tests/mutations/apply.sh [--baseline JUNIT.xml] [NAME ...|all]
#   --baseline: the whole suite's JUnit report (scripts/test passes it): each guard's unbroken run is read from it
#   instead of being run again. Exit 0 all caught, 1 not, 2 usage, 3 a file left broken that cannot be restored.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${PYTHON:-.venv/bin/python}" -m tests.mutations.breakages "$@"
