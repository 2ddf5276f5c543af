#!/bin/bash
# score-plugins environment step (rattler backend): build, or reuse, one environment.
# Usage: build_env.sh TARGET LOCKFILE
# Built at its final path under flock and marked complete last, so concurrent
# jobs wait for one build and a half-built environment is never used.
# Every value below is single-quoted on purpose: a '$(...)' in a path stays text.
# shellcheck disable=SC2016
set -euo pipefail
target="${1:?usage: build_env.sh TARGET LOCKFILE}"
lockfile="${2:?usage: build_env.sh TARGET LOCKFILE}"
RATTLER_PYTHON=/usr/bin/python3
RATTLER_TOOL=/runs/r1/rattler_tool.py
# the pip layer is installed by uv into the environment's own interpreter
UV=uv
export UV_PYTHON_DOWNLOADS=never
export UV_LINK_MODE=copy
# the shared sandbox (job/sandbox.py next to this script: the bundle's copy of pipeline/job): packages' link scripts and the pip
# layer's build scripts are submitter code
SANDBOX="$(dirname -- "$0")/job/sandbox.py"
SANDBOX_PYTHON=python3
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
scratch=$(mktemp -d)
trap 'rm -rf -- "$scratch"' EXIT
grep -v '^# pip ' "$explicit" > "$scratch/conda-explicit.txt"
sed -n 's/^# pip //p' "$explicit" > "$scratch/pip-requirements.txt"
pip_count=$(wc -l < "$scratch/pip-requirements.txt")
# Every index package carries its sha256; a VCS requirement is pinned to the commit it resolved to, which
# pip's hash mode cannot express, so such a layer is installed with its hashes verified where given.
hash_mode=--require-hashes
if grep -q ' @ git+' "$scratch/pip-requirements.txt"; then
  hash_mode=--verify-hashes
fi
uv_path=""
if [ "$pip_count" -gt 0 ]; then
  if ! uv_path=$(command -v "$UV"); then
    echo "score-plugins: no uv at '$UV' on $(hostname): the pip layer cannot be installed (setting uv)" >&2
    exit 1
  fi
fi
# Both layers in one step: the node tool installs the conda part into the prefix, then (when the lock has pip
# entries) uv installs the pip part into the prefix's own interpreter, hashes required.
# shellcheck disable=SC2154  # $1..$4 of the inner shell
build='set -e
target=$1 uv=$2 hash_mode=$3 requirements=$4
shift 4
"$@" || echo "score-plugins: installer exited $?"
if [ -s "$requirements" ]; then
  "$uv" pip install --quiet --no-deps --python "$target/bin/python" "$hash_mode" -r "$requirements"
fi
"$target/bin/python" -c "import sys; print(\"score-plugins: environment python\", sys.version.split()[0])"'
# The installer (and any link script of a package) and uv (and any build script of the pip layer) run in the
# sandbox as an unprivileged user, with only this environment writable (the package cache is seen through a layer
# of this step's own, thrown away after: link and build scripts run in the same step); root owns the result after.
sandboxed=("$SANDBOX_PYTHON" "$SANDBOX" exec --network on --rw "$scratch" --rw "$target" --ro "$lockfile")
if [ -n "$uv_path" ]; then
  sandboxed+=(--ro "$uv_path" --setenv UV_NO_CACHE=1)
fi
sandboxed+=(--ro "$RATTLER_TOOL" --ro "$(dirname -- "$(dirname -- "$RATTLER_PYTHON")")" --python "$RATTLER_PYTHON" --)
# py-rattler installs the lock's conda packages; a rare crash after a finished install was seen,
# so the result is verified rather than the installer's exit code trusted.
"${sandboxed[@]}" /bin/sh -c "$build" sh "$target" "$uv_path" "$hash_mode" "$scratch/pip-requirements.txt" \
  "$RATTLER_PYTHON" "$RATTLER_TOOL" install "$lockfile" "$target"
# the environment's interpreter must be its own (root later reads where it points)
case "$(readlink -f -- "$target/bin/python")" in
  "$(readlink -f -- "$target")"/*) ;;
  *) echo "score-plugins: the environment's python points outside it; refused" >&2; exit 1 ;;
esac
"$RATTLER_PYTHON" "$RATTLER_TOOL" verify "$lockfile" "$target"
if [ "$pip_count" -gt 0 ]; then
  echo "score-plugins: pip layer of $pip_count packages installed"
fi
# the build ran as another user: never write through a name it could have planted (a symlink)
rm -f -- "$target/score-plugins.lock" "$marker"
cp -- "$lockfile" "$target/score-plugins.lock"
date -u +%Y-%m-%dT%H:%M:%SZ > "$marker"
echo "score-plugins: environment $target complete"
