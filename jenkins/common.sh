#!/usr/bin/env bash
# Shared by the Jenkins entry scripts: read and validate Jenkins' environment before doing anything.
# Every parameter is checked against a strict pattern; a bad one stops the build with exit 2 and says which.

fail() { echo "jenkins: $*" >&2; exit 2; }

require_commit() {  # NAME VALUE: a full 40-hex commit id
  [[ "$2" =~ ^[0-9a-f]{40}$ ]] || fail "$1 must be a full commit id, not '$2'"
}

validate_common() {
  [ -n "${WORKSPACE:-}" ] || fail "WORKSPACE is not set (run this from a Jenkins job)"
  [ -d "$WORKSPACE/.git" ] || fail "WORKSPACE=$WORKSPACE is not a git checkout of the plugins repository"
  [[ "${BUILD_NUMBER:-}" =~ ^[0-9]+$ ]] || fail "BUILD_NUMBER must be a number, not '${BUILD_NUMBER:-}'"
  require_commit GIT_COMMIT "${GIT_COMMIT:-}"
  if [ -n "${GIT_PREVIOUS_SUCCESSFUL_COMMIT:-}" ]; then
    require_commit GIT_PREVIOUS_SUCCESSFUL_COMMIT "$GIT_PREVIOUS_SUCCESSFUL_COMMIT"
    BASE="$GIT_PREVIOUS_SUCCESSFUL_COMMIT"
  else
    # First build of the job: the merge's first parent is what the change is measured against.
    BASE=$(git -C "$WORKSPACE" rev-parse --verify --quiet "${GIT_COMMIT}^1") || fail "GIT_COMMIT has no parent"
  fi
  if [ -n "${DOMAIN:-}" ] && ! [[ "$DOMAIN" =~ ^[A-Za-z_][A-Za-z0-9_]{0,99}$ ]]; then
    fail "DOMAIN must be a folder name (letters, digits, _), not '$DOMAIN'"
  fi
  SCORE_PLUGINS="${SCORE_PLUGINS_BIN:-score-plugins}"
  command -v "$SCORE_PLUGINS" >/dev/null || fail "score-plugins not found (set SCORE_PLUGINS_BIN)"
  export BASE SCORE_PLUGINS
}

validate_ids() {  # NAME VALUE: empty, or comma-separated plugin identifiers
  [ -z "$2" ] || [[ "$2" =~ ^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}(,[A-Za-z0-9][A-Za-z0-9._+-]{0,199})*$ ]] \
    || fail "$1 must be comma-separated identifiers, not '$2'"
}
