#!/usr/bin/env bash
# Entry script of the score_plugins (prod database) and dev_score_plugins (dev database) Jenkins jobs.
# Reads Jenkins' environment and the job parameters, validates all of them, then runs score-plugins.
# The JSON result goes to $WORKSPACE/score-plugins-result.json (no stdout parsing between steps).
#   Parameters: SUBMITTER_EMAIL, DOMAIN, MODELS, BENCHMARKS (comma-separated ids to force), FORCE, EXECUTOR
set -euo pipefail
# shellcheck source=jenkins/common.sh
source "$(dirname "$0")/common.sh"

case "${JOB_NAME:-}" in
  score_plugins) PROFILE=prod ;;
  dev_score_plugins)
    PROFILE=dev
    if [ -n "${SCORE_PLUGINS_DB_DEV:-}" ] && [ "${SCORE_PLUGINS_DB_DEV}" = "${SCORE_PLUGINS_DB_PROD:-}" ]; then
      fail "SCORE_PLUGINS_DB_DEV is the prod database; the dev job refuses to run"
    fi
    # The dev job never holds prod credentials, whatever the agent's environment carries.
    unset SCORE_PLUGINS_DB_PROD SCORE_PLUGINS_SMTP_PROD
    ;;
  *) fail "JOB_NAME must be score_plugins or dev_score_plugins, not '${JOB_NAME:-}'" ;;
esac
validate_common
EXECUTOR="${EXECUTOR:-slurm}"
[[ "$EXECUTOR" =~ ^(slurm|submitit|local)$ ]] || fail "EXECUTOR must be slurm, submitit or local, not '$EXECUTOR'"
validate_ids MODELS "${MODELS:-}"
validate_ids BENCHMARKS "${BENCHMARKS:-}"
FORCE="${FORCE:-false}"
[[ "$FORCE" =~ ^(true|false)$ ]] || fail "FORCE must be true or false, not '$FORCE'"
SUBMITTER_EMAIL="${SUBMITTER_EMAIL:-}"
if [ -n "$SUBMITTER_EMAIL" ] && ! [[ "$SUBMITTER_EMAIL" =~ ^[A-Za-z0-9._%+-]+@[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; then
  fail "SUBMITTER_EMAIL is not an email address: '$SUBMITTER_EMAIL'"
fi

args=(run --profile "$PROFILE" --repo "$WORKSPACE" --base "$BASE" --head "$GIT_COMMIT" --executor "$EXECUTOR"
      --jenkins-build "${JOB_NAME}#${BUILD_NUMBER}" --format json)
[ -n "${BUILD_URL:-}" ] && args+=(--build-url "$BUILD_URL")
[ -n "${DOMAIN:-}" ] && args+=(--domain-root "$DOMAIN")
[ -n "$SUBMITTER_EMAIL" ] && args+=(--submitter "$SUBMITTER_EMAIL")
[ -n "${MODELS:-}" ] && args+=(--models "$MODELS")
[ -n "${BENCHMARKS:-}" ] && args+=(--benchmarks "$BENCHMARKS")
[ "$FORCE" = true ] && args+=(--force)

echo "jenkins: $JOB_NAME #$BUILD_NUMBER: profile $PROFILE, $BASE..$GIT_COMMIT, executor $EXECUTOR" >&2
status=0
"$SCORE_PLUGINS" "${args[@]}" > "$WORKSPACE/score-plugins-result.json" || status=$?
echo "jenkins: score-plugins exited $status; result in $WORKSPACE/score-plugins-result.json" >&2
exit "$status"
