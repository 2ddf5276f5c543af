#!/usr/bin/env bash
# Shared by the Jenkins entry scripts: read and validate Jenkins' environment before doing anything, find
# score-plugins and the state folder, and run the coordinator so that Jenkins' stop signals reach it.
#
# Variables read (README, "Jenkins"):
#   Jenkins: WORKSPACE, GIT_COMMIT, BUILD_NUMBER, JOB_NAME, BUILD_URL (optional), GIT_PREVIOUS_SUCCESSFUL_COMMIT
#            (optional); pull requests: CHANGE_TARGET (multibranch) or ghprbTargetBranch and ghprbActualCommit
#            (GitHub pull request builder).
#   Ours:    SCORE_PLUGINS_HOME (this checkout; default: the folder above this script),
#            SCORE_PLUGINS_BIN (default: $SCORE_PLUGINS_HOME/.venv/bin/score-plugins, else score-plugins on PATH),
#            SCORE_PLUGINS_STATE_DIR (default: ${XDG_STATE_HOME:-$HOME/.local/state}/score-plugins/<profile>, outside
#            the workspace, so locks, run bundles and the outbox outlive a workspace wipe), and every other
#            SCORE_PLUGINS_* setting or credential, read by score-plugins itself.
# Parameters are passed to score-plugins as single arguments, never evaluated by the shell.

# The exit code of a build whose run did its job while some plugins failed: jobs.yaml maps it to UNSTABLE
# (unstable-return), the Jenkinsfile likewise. 0 green; 2 bad input, 3 infrastructure, 129/130/143 stopped: red.
# shellcheck disable=SC2034 # read by the scripts that source this file
UNSTABLE=4

fail() { printf 'jenkins: %s\n' "$*" >&2; exit 2; }

require_commit() {  # NAME VALUE: a full 40-hex commit id
  [[ "$2" =~ ^[0-9a-f]{40}$ ]] || fail "$1 must be a full commit id, not ${2@Q}"
}

validate_common() {  # STATE_NAME: the state folder's name under the default root (the profile, or unittests)
  [ -n "${WORKSPACE:-}" ] || fail "WORKSPACE is not set (run this from a Jenkins job)"
  [ -d "$WORKSPACE/.git" ] || fail "WORKSPACE=${WORKSPACE@Q} is not a git checkout of the plugins repository"
  [[ "${BUILD_NUMBER:-}" =~ ^[0-9]+$ ]] || fail "BUILD_NUMBER must be a number, not ${BUILD_NUMBER@Q}"
  require_commit GIT_COMMIT "${GIT_COMMIT:-}"
  if [ -n "${GIT_PREVIOUS_SUCCESSFUL_COMMIT:-}" ]; then
    require_commit GIT_PREVIOUS_SUCCESSFUL_COMMIT "$GIT_PREVIOUS_SUCCESSFUL_COMMIT"
  fi
  if [ -n "${DOMAIN:-}" ] && ! [[ "$DOMAIN" =~ ^[A-Za-z_][A-Za-z0-9_]{0,99}$ ]]; then
    fail "DOMAIN must be a folder name (letters, digits, _), not ${DOMAIN@Q}"
  fi
  SCORE_PLUGINS_HOME="${SCORE_PLUGINS_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
  if [ -n "${SCORE_PLUGINS_BIN:-}" ]; then
    SCORE_PLUGINS="$SCORE_PLUGINS_BIN"
  elif [ -x "$SCORE_PLUGINS_HOME/.venv/bin/score-plugins" ]; then
    SCORE_PLUGINS="$SCORE_PLUGINS_HOME/.venv/bin/score-plugins"
  else
    SCORE_PLUGINS=score-plugins
  fi
  command -v "$SCORE_PLUGINS" >/dev/null \
    || fail "score-plugins not found: run scripts/setup in SCORE_PLUGINS_HOME=${SCORE_PLUGINS_HOME@Q}, or set SCORE_PLUGINS_BIN"
  if [ -z "${SCORE_PLUGINS_STATE_DIR:-}" ]; then
    local root="${XDG_STATE_HOME:-${HOME:-}/.local/state}"
    [ -n "${XDG_STATE_HOME:-}${HOME:-}" ] || fail "neither SCORE_PLUGINS_STATE_DIR nor HOME is set: name the state folder"
    SCORE_PLUGINS_STATE_DIR="$root/score-plugins/$1"
  fi
  mkdir -p "$SCORE_PLUGINS_STATE_DIR" || fail "cannot create the state folder ${SCORE_PLUGINS_STATE_DIR@Q}"
  export SCORE_PLUGINS SCORE_PLUGINS_HOME SCORE_PLUGINS_STATE_DIR
}

run_coordinator() {  # OUT ARGS...: score-plugins ARGS with stdout to OUT; sets STATUS to its exit code
  # Its own process group (set -m): a signal sent to this script's group reaches it once, from us, and SIGINT is
  # not ignored as it is for a background job without job control. SIGTERM, SIGINT and SIGHUP sent to this script
  # are passed on, and the script waits for the coordinator to cancel, record and mail before it exits in turn.
  local out="$1"
  shift
  set -m
  "$SCORE_PLUGINS" "$@" >"$out" &
  CHILD=$!
  set +m
  trap 'forward TERM' TERM
  trap 'forward INT' INT
  trap 'forward HUP' HUP
  # shellcheck disable=SC2034
  STATUS=0
  local rc
  while :; do
    SIGNALLED=0
    rc=0
    wait "$CHILD" || rc=$?
    [ "$rc" = 127 ] && break  # reaped already: STATUS holds its own exit code
    # shellcheck disable=SC2034 # read by the scripts that source this file
    STATUS=$rc
    [ "$SIGNALLED" = 1 ] || break  # a wait cut short by a signal is waited again
  done
  trap - TERM INT HUP
}

forward() {  # SIGNAL: pass a stop signal on to the coordinator
  SIGNALLED=1
  printf 'jenkins: SIG%s received: passed on to score-plugins (pid %s), waiting for it to record the cancel\n' \
    "$1" "$CHILD" >&2
  kill -s "$1" "$CHILD" 2>/dev/null || true
}
