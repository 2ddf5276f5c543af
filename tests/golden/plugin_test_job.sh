#!/bin/bash
#SBATCH --job-name=plugin-tests
#SBATCH --array=0-0
#SBATCH --time=60
#SBATCH --mem=4G
#SBATCH --cpus-per-task=1
# score-plugins plugin-test job: each array task runs one plugin's tests with pytest in the plugin's own
# environment and writes a JUnit report. Exit 3: the environment could not be built (see env-<task>.log).
# Every value below is single-quoted on purpose: a '$(...)' in a path stays text.
# shellcheck disable=SC2016
set -euo pipefail

CODE_DIR=/code
REPORT_DIR=/reports
BUILD_ENV=/b.sh
ENV_ROOT=/envs
BASE_PYTHON=python3
SANDBOX="$(dirname -- "$BUILD_ENV")/job/sandbox.py"

task=$(( ${SCORE_PLUGINS_TASK_OFFSET:-0} + ${SLURM_ARRAY_TASK_ID:?run this script as a Slurm array task} ))
case "$task" in
  0) plugin=models/logreg; env_key=abc; lockfile=/locks/abc.txt; tests=( /code/models/logreg/test.py ) ;;
  *) echo "score-plugins: this job has no array task $task" >&2; exit 2 ;;
esac

mkdir -p "$REPORT_DIR"
env_path="$ENV_ROOT/$env_key"
if ! bash "$BUILD_ENV" "$env_path" "$lockfile" >"$REPORT_DIR/env-$task.log" 2>&1; then
  echo "score-plugins: the environment of $plugin could not be built" >&2
  exit 3
fi
out="$REPORT_DIR/task-$task"
# The plugin's tests are submitter code: pytest runs in the sandbox as an unprivileged user, with the code and
# its environment read-only and only its own report folder writable (root reads the report without following links).
exec "$BASE_PYTHON" "$SANDBOX" exec --network on --rw "$out" --ro "$CODE_DIR" --ro "$env_path" --python "$env_path/bin/python" \
  --setenv "PYTHONPATH=$CODE_DIR" --setenv PYTHONDONTWRITEBYTECODE=1 --setenv MPLBACKEND=Agg \
  -- "$env_path/bin/python" -m pytest -q -p no:cacheprovider --junitxml="$out/junit.xml" \
  -o "junit_suite_name=$plugin" "${tests[@]}"
