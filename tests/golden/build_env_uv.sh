#!/bin/bash
# score-plugins environment step (uv backend): build, or reuse, one environment.
# Usage: build_env.sh TARGET LOCKFILE
# Built at its final path under flock and marked complete last, so concurrent
# jobs wait for one build and a half-built environment is never used.
# Every value below is single-quoted on purpose: a '$(...)' in a path stays text.
# shellcheck disable=SC2016
set -euo pipefail
target="${1:?usage: build_env.sh TARGET LOCKFILE}"
lockfile="${2:?usage: build_env.sh TARGET LOCKFILE}"
UV=/opt/uv
BASE_PYTHON=/usr/bin/python3
# the shared sandbox (job/sandbox.py next to this script: the bundle's copy of pipeline/job): builds run submitters' build scripts
SANDBOX="$(dirname -- "$0")/job/sandbox.py"
export UV_PYTHON_DOWNLOADS=never
# Copies, not hard links into uv's cache: no file of an environment is shared with the cache or another one.
export UV_LINK_MODE=copy
export UV_CACHE_DIR=/cache
marker="$target/.score-plugins-complete"

if [ -f "$marker" ]; then
  echo "score-plugins: reusing environment $target"
  exit 0
fi
mkdir -p "$(dirname "$target")"
exec 9>"$target.lock"
flock 9
if [ -f "$marker" ]; then
  echo "score-plugins: environment $target was built by another job"
  exit 0
fi
echo "score-plugins: building environment $target from $lockfile"
rm -rf -- "$target"
# Every index package is pinned with its hashes; a VCS requirement is pinned to the commit it resolved to,
# which pip's hash mode cannot express, so such a lockfile is installed with its hashes verified where given.
hash_mode=--require-hashes
if grep -Eq '^[A-Za-z0-9._-]+ @ git\+' "$lockfile"; then
  hash_mode=--verify-hashes
fi
# shellcheck disable=SC2154  # $1..$4 of the inner shell
build='"$1" venv --quiet --python "$2" "$3" && "$1" pip sync --quiet --python "$3/bin/python" "$4" "$5"'
# Build scripts of sdists and git requirements are submitter code: the build runs in the sandbox as an
# unprivileged user, with only this environment writable; root owns the result after.
scratch=$(mktemp -d)
trap 'rm -rf -- "$scratch"' EXIT
status=0
# The shared package cache is never writable by submitter code: each step sees it through a layer of its own.
# First uv alone, without building anything (nothing but uv runs: what it downloaded, hash-checked, joins the
# cache afterwards, root's); only if something must be built, the whole build again, its layer thrown away.
no_build='"$1" venv --quiet --python "$2" "$3" && "$1" pip sync --quiet --no-build --python "$3/bin/python" "$4" "$5"'
"$BASE_PYTHON" "$SANDBOX" exec --network on --rw "$scratch" --rw "$target" --cache-merge "$UV_CACHE_DIR" \
  --ro "$lockfile" --ro "$UV" --python "$BASE_PYTHON" \
  -- /bin/sh -c "$no_build" sh "$UV" "$BASE_PYTHON" "$target" "$hash_mode" "$lockfile" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
  echo "score-plugins: a package must be built: building with its build scripts, the package cache read-only"
  rm -rf -- "$target"
  status=0
  "$BASE_PYTHON" "$SANDBOX" exec --network on --rw "$scratch" --rw "$target" --cache "$UV_CACHE_DIR" \
    --ro "$lockfile" --ro "$UV" --python "$BASE_PYTHON" \
    -- /bin/sh -c "$build" sh "$UV" "$BASE_PYTHON" "$target" "$hash_mode" "$lockfile" || status=$?
fi
if [ "$status" -ne 0 ]; then
  exit "$status"
fi
# the environment's interpreter must still be the base interpreter (root later reads where it points)
if [ "$(readlink -f -- "$target/bin/python")" != "$(readlink -f -- "$BASE_PYTHON")" ]; then
  echo "score-plugins: the build changed the environment's interpreter; refused" >&2
  exit 1
fi
# its first start runs what the packages put there (a `.pth`): sandboxed too, no cache in reach, nothing writable
"$BASE_PYTHON" "$SANDBOX" exec --network off --rw "$scratch" --ro "$target" --python "$BASE_PYTHON" \
  -- "$target/bin/python" -c 'import sys; print("score-plugins: environment python", sys.version.split()[0])'
# the build ran as another user: never write through a name it could have planted (a symlink)
rm -f -- "$target/score-plugins.lock" "$marker"
cp -- "$lockfile" "$target/score-plugins.lock"
date -u +%Y-%m-%dT%H:%M:%SZ > "$marker"
echo "score-plugins: environment $target complete"
