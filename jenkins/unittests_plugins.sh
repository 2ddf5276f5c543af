#!/usr/bin/env bash
# Entry script of the unittests_plugins Jenkins job: each changed plugin's test.py, run with pytest in the
# plugin's own environment; one JUnit XML report at $WORKSPACE/reports/plugins-junit.xml for Jenkins.
set -euo pipefail
# shellcheck source=jenkins/common.sh
source "$(dirname "$0")/common.sh"
validate_common
args=(test-plugins --repo "$WORKSPACE" --base "$BASE" --head "$GIT_COMMIT"
      --junit "$WORKSPACE/reports/plugins-junit.xml")
[ -n "${DOMAIN:-}" ] && args+=(--domain-root "$DOMAIN")
echo "jenkins: $JOB_NAME #$BUILD_NUMBER: plugin tests for $BASE..$GIT_COMMIT" >&2
exec "$SCORE_PLUGINS" "${args[@]}"
