#!/bin/bash
# score-plugins environment step (micromamba backend): build, or reuse, one environment.
# Usage: build_env.sh TARGET LOCKFILE
# Built at its final path under flock and marked complete last, so concurrent
# jobs wait for one build and a half-built environment is never used.
# Every value below is single-quoted on purpose: a '$(...)' in a path stays text.
# shellcheck disable=SC2016
set -euo pipefail
target="${1:?usage: build_env.sh TARGET LOCKFILE}"
lockfile="${2:?usage: build_env.sh TARGET LOCKFILE}"
MICROMAMBA=/opt/micromamba
# the shared sandbox (a copy of pipeline/sandbox.py next to this script): packages' link scripts are submitter code
SANDBOX="$(dirname -- "$0")/sandbox.py"
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
# The installer (and any link script of a package) runs in the sandbox as an unprivileged user, with only this
# environment (and the package cache) writable; root owns the result after.
scratch=$(mktemp -d)
trap 'rm -rf -- "$scratch"' EXIT
sandboxed=("$SANDBOX_PYTHON" "$SANDBOX" exec --rw "$scratch" --rw "$target" --ro "$lockfile")
sandboxed+=(--ro "$MICROMAMBA" --)
"${sandboxed[@]}" "$MICROMAMBA" create -y -p "$target" -f "$lockfile"
# the environment's interpreter must be its own (root later reads where it points)
case "$(readlink -f -- "$target/bin/python")" in
  "$(readlink -f -- "$target")"/*) ;;
  *) echo "score-plugins: the environment's python points outside it; refused" >&2; exit 1 ;;
esac
# the build ran as another user: never write through a name it could have planted (a symlink)
rm -f -- "$target/score-plugins.lock" "$marker"
cp -- "$lockfile" "$target/score-plugins.lock"
date -u +%Y-%m-%dT%H:%M:%SZ > "$marker"
echo "score-plugins: environment $target complete"
