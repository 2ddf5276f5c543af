#!/usr/bin/env bash
# Entry script of the score_plugins (prod database) and dev_score_plugins (dev database) Jenkins jobs.
# Reads Jenkins' environment and the job parameters, validates them, then runs score-plugins on the change since
# the commit this profile's pipeline last processed (recorded in its own database, not Jenkins' last green build).
# The JSON result goes to $WORKSPACE/score-plugins-result.json, written whole or not at all.
#   Parameters: SUBMITTER_EMAIL, DOMAIN, MODELS, BENCHMARKS (comma-separated ids, spaces allowed after commas),
#   FORCE, EXECUTOR. Other variables: see common.sh.
# Exit: 0 done (plugins may have been refused: they are told); $UNSTABLE (4) done, some pairs failed;
#   2 bad input; 3 infrastructure; 129/130/143 stopped by SIGHUP/SIGINT/SIGTERM.
set -euo pipefail
# shellcheck source=jenkins/common.sh
source "$(dirname "$0")/common.sh"

case "${JOB_NAME:-}" in
  score_plugins) PROFILE=prod ;;
  dev_score_plugins)
    PROFILE=dev
    # The dev job never holds prod credentials, whatever the agent's environment carries. Which database it
    # reaches is not judged here: every database records its profile, and a dev connection to prod's is refused.
    unset SCORE_PLUGINS_DB_PROD SCORE_PLUGINS_SMTP_PROD
    ;;
  *) fail "JOB_NAME must be score_plugins or dev_score_plugins, not ${JOB_NAME@Q}" ;;
esac
validate_common "$PROFILE"
EXECUTOR="${EXECUTOR:-slurm}"
[[ "$EXECUTOR" =~ ^(slurm|submitit|local)$ ]] || fail "EXECUTOR must be slurm, submitit or local, not ${EXECUTOR@Q}"
FORCE="${FORCE:-false}"
[[ "$FORCE" =~ ^(true|false)$ ]] || fail "FORCE must be true or false, not ${FORCE@Q}"
SUBMITTER_EMAIL="${SUBMITTER_EMAIL:-}"
if [ -n "$SUBMITTER_EMAIL" ] && ! [[ "$SUBMITTER_EMAIL" =~ ^[A-Za-z0-9._%+-]+@[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; then
  fail "SUBMITTER_EMAIL is not an email address: ${SUBMITTER_EMAIL@Q}"
fi

args=(run --profile "$PROFILE" --repo "$WORKSPACE" --head "$GIT_COMMIT" --since-processed --executor "$EXECUTOR"
      --jenkins-build "${JOB_NAME}#${BUILD_NUMBER}" --format json)
# Only where this profile has processed nothing yet (its first build): the change since Jenkins' last green build
[ -n "${GIT_PREVIOUS_SUCCESSFUL_COMMIT:-}" ] && args+=(--base "$GIT_PREVIOUS_SUCCESSFUL_COMMIT")
[ -n "${BUILD_URL:-}" ] && args+=(--build-url "$BUILD_URL")
[ -n "${DOMAIN:-}" ] && args+=(--domain-root "$DOMAIN")
[ -n "$SUBMITTER_EMAIL" ] && args+=(--submitter "$SUBMITTER_EMAIL")
# The ids go as one argument each (`--models=...`: never read as an option), checked by score-plugins by the same
# rules as on its command line.
[ -n "${MODELS:-}" ] && args+=("--models=$MODELS")
[ -n "${BENCHMARKS:-}" ] && args+=("--benchmarks=$BENCHMARKS")
[ "$FORCE" = true ] && args+=(--force)

RESULT="$WORKSPACE/score-plugins-result.json"
echo "jenkins: $JOB_NAME #$BUILD_NUMBER: profile $PROFILE, head $GIT_COMMIT, executor $EXECUTOR," \
     "state folder $SCORE_PLUGINS_STATE_DIR" >&2
partial=$(mktemp "$WORKSPACE/.score-plugins-result.XXXXXX")
run_coordinator "$partial" "${args[@]}"
if [ -s "$partial" ]; then
  mv -f "$partial" "$RESULT"  # whole, in one rename: never a half-written or empty file over the last result
  written=true
else
  rm -f "$partial"
  printf '{"run_id": null, "states": {}, "pairs": [], "exit_code": %d, "error": "score-plugins exited %d before it wrote a result: see the console"}\n' \
    "$STATUS" "$STATUS" >"$RESULT.tmp"
  mv -f "$RESULT.tmp" "$RESULT"
  written=false
fi

case "$STATUS" in
  0) meaning="done" ; code=0 ;;
  1) if $written; then meaning="done; some pairs failed (UNSTABLE)"; code=$UNSTABLE
     else meaning="score-plugins failed unexpectedly"; code=1; fi ;;
  2) if $written; then meaning="done; plugins of the change were refused and their submitters told (UNSTABLE)"; code=$UNSTABLE
     else meaning="bad input"; code=2; fi ;;
  3) meaning="infrastructure unreachable or missing: nothing is recorded as processed, the next build tries again"; code=3 ;;
  129|130|143) meaning="stopped by a signal: the run is recorded CANCELLED"; code=$STATUS ;;
  *) meaning="unexpected exit"; code=$STATUS ;;
esac
echo "jenkins: score-plugins exited $STATUS: $meaning; result in $RESULT; build exits $code" >&2
exit "$code"
