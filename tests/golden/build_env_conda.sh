#!/bin/bash
# score-plugins environment step (conda backend): build, or reuse, one environment.
# Usage: build_env.sh TARGET LOCKFILE
# Built at its final path under flock and marked complete last, so concurrent
# jobs wait for one build and a half-built environment is never used.
# Every value below is single-quoted on purpose: a '$(...)' in a path stays text.
# shellcheck disable=SC2016
set -euo pipefail
target="${1:?usage: build_env.sh TARGET LOCKFILE}"
lockfile="${2:?usage: build_env.sh TARGET LOCKFILE}"
CONDA=/opt/conda/bin/conda
# the pip layer is installed by uv into the environment's own interpreter
UV=uv
export UV_PYTHON_DOWNLOADS=never
export UV_LINK_MODE=copy
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
# One lockfile (conda-lock.yml) holds both layers; beside it, `conda-lock render --kind explicit` of the same
# file: its conda URLs (with md5) are the conda part, its `# pip NAME @ URL#sha256=...` lines the pip part.
explicit="$(dirname "$lockfile")/conda-linux-64.lock"
parts="$(mktemp -d)"
# shellcheck disable=SC2317  # called by the EXIT trap
remove_parts() { rm -rf -- "$parts"; }
trap remove_parts EXIT
grep -v '^# pip ' "$explicit" > "$parts/conda-explicit.txt"
sed -n 's/^# pip //p' "$explicit" > "$parts/pip-requirements.txt"
"$CONDA" create -y -p "$target" --file "$parts/conda-explicit.txt"
if [ -s "$parts/pip-requirements.txt" ]; then
  if ! command -v "$UV" >/dev/null 2>&1; then
    echo "score-plugins: no uv at '$UV' on $(hostname): the pip layer cannot be installed (setting uv)" >&2
    exit 1
  fi
  # Every index package carries its sha256; a VCS requirement is pinned to the commit it resolved to, which
  # pip's hash mode cannot express, so such a layer is installed with its hashes verified where given.
  hash_mode=--require-hashes
  if grep -q ' @ git+' "$parts/pip-requirements.txt"; then
    hash_mode=--verify-hashes
  fi
  "$UV" pip install --quiet --no-deps --python "$target/bin/python" "$hash_mode" -r "$parts/pip-requirements.txt"
  echo "score-plugins: pip layer of $(wc -l < "$parts/pip-requirements.txt") packages installed"
fi
"$target/bin/python" -c 'import sys; print("score-plugins: environment python", sys.version.split()[0])'
cp -- "$lockfile" "$target/score-plugins.lock"
date -u +%Y-%m-%dT%H:%M:%SZ > "$marker"
echo "score-plugins: environment $target complete"
