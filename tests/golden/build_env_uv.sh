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
"$UV" venv --quiet --python "$BASE_PYTHON" "$target"
# Every index package is pinned with its hashes; a VCS requirement is pinned to the commit it resolved to,
# which pip's hash mode cannot express, so such a lockfile is installed with its hashes verified where given.
hash_mode=--require-hashes
if grep -Eq '^[A-Za-z0-9._-]+ @ git\+' "$lockfile"; then
  hash_mode=--verify-hashes
fi
"$UV" pip sync --quiet --python "$target/bin/python" "$hash_mode" "$lockfile"
"$target/bin/python" -c 'import sys; print("score-plugins: environment python", sys.version.split()[0])'
cp -- "$lockfile" "$target/score-plugins.lock"
date -u +%Y-%m-%dT%H:%M:%SZ > "$marker"
echo "score-plugins: environment $target complete"
