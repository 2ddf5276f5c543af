#!/usr/bin/env bash
# Re-apply the hand-made breakages of issue 26, one at a time, and check that each one's test goes red.
# Usage: tests/mutations/apply.sh [NAME ...|all]   (files are restored after each; exit 1 if one was not caught)
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${PYTHON:-.venv/bin/python}" -m tests.mutations.breakages "$@"
