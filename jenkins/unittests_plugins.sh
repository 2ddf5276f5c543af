#!/usr/bin/env bash
# Entry script of the unittests_plugins Jenkins job: each plugin the change touches has its test.py run with pytest
# in the plugin's own environment; one JUnit XML report at $WORKSPACE/reports/plugins-junit.xml for Jenkins.
# A pull request is tested against its target: the change is its head (ghprbActualCommit, else GIT_COMMIT) since
# the merge base with the target branch (CHANGE_TARGET from a multibranch job, or ghprbTargetBranch from the GitHub
# pull request builder), which the job fetches as refs/remotes/origin/<target>. Without a target (a branch build):
# since GIT_PREVIOUS_SUCCESSFUL_COMMIT, else the head's first parent. Other variables: see common.sh.
# Exit: 0 every test passed; 1 some failed; 2 bad input; 3 infrastructure; 129/130/143 stopped.
set -euo pipefail
# shellcheck source=jenkins/common.sh
source "$(dirname "$0")/common.sh"
validate_common unittests

if [ -n "${ghprbActualCommit:-}" ]; then
  require_commit ghprbActualCommit "$ghprbActualCommit"
  HEAD="$ghprbActualCommit"
else
  HEAD="$GIT_COMMIT"
fi
git -C "$WORKSPACE" cat-file -e "$HEAD^{commit}" 2>/dev/null || fail "the head $HEAD is not in the workspace"
TARGET="${CHANGE_TARGET:-${ghprbTargetBranch:-}}"
if [ -n "$TARGET" ]; then
  if [[ "$TARGET" == -* ]] || ! git -C "$WORKSPACE" check-ref-format --branch "$TARGET" >/dev/null 2>&1; then
    fail "the target branch ${TARGET@Q} is not a branch name"
  fi
  target_ref=""
  for ref in "refs/remotes/origin/$TARGET" "refs/heads/$TARGET"; do
    if git -C "$WORKSPACE" rev-parse --verify --quiet "$ref^{commit}" >/dev/null; then target_ref=$ref; break; fi
  done
  [ -n "$target_ref" ] || fail "the pull request's target branch ${TARGET@Q} is not in the workspace: fetch it with the" \
    "refspec +refs/heads/$TARGET:refs/remotes/origin/$TARGET (jenkins/jobs.yaml does)"
  BASE=$(git -C "$WORKSPACE" merge-base "$target_ref" "$HEAD") \
    || fail "the pull request's head $HEAD has no common history with $target_ref"
  why="pull request against $TARGET (merge base $BASE)"
elif [ -n "${GIT_PREVIOUS_SUCCESSFUL_COMMIT:-}" ]; then
  BASE="$GIT_PREVIOUS_SUCCESSFUL_COMMIT"
  why="since the last successful build"
else
  BASE=$(git -C "$WORKSPACE" rev-parse --verify --quiet "$HEAD^1") || fail "$HEAD has no parent"
  why="since the head's first parent"
fi

args=(test-plugins --repo "$WORKSPACE" --base "$BASE" --head "$HEAD" --junit "$WORKSPACE/reports/plugins-junit.xml")
[ -n "${DOMAIN:-}" ] && args+=(--domain-root "$DOMAIN")
echo "jenkins: $JOB_NAME #$BUILD_NUMBER: plugin tests for $BASE..$HEAD ($why)" >&2
run_coordinator /dev/stdout "${args[@]}"
exit "$STATUS"
