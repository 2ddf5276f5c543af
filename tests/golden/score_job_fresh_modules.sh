#!/bin/bash
#SBATCH --job-name=score-r1
#SBATCH --array=0-1%1
#SBATCH --partition=debug
#SBATCH --account=lab
#SBATCH --time=90
#SBATCH --mem=8G
#SBATCH --cpus-per-task=2
# score-plugins scoring job for run r1: 3 pairs in 2 array tasks.
# An admin can submit it by hand with sbatch; results land in the run's spool folder,
# and `score-plugins ingest` loads them into the database.
# Every value below is single-quoted on purpose: a '$(...)' in a path stays text.
# shellcheck disable=SC2016
set -euo pipefail

RUN_DIR=/runs/r1
MANIFEST=/runs/r1/manifest.json
WORKER=/runs/r1/worker.py
BASE_PYTHON=/usr/bin/python3
LOG_DIR=/runs/r1/logs
ENV_ROOT=/envs
ENV_MODE=fresh
module load python/3.11

cd "$RUN_DIR"
# Arrays larger than MaxArraySize are submitted in parts; each part's tasks start at its offset.
task=$(( ${SCORE_PLUGINS_TASK_OFFSET:-0} + ${SLURM_ARRAY_TASK_ID:?run this script as a Slurm array task} ))
mkdir -p "$LOG_DIR"
# the local executor records this task's pid here; the task removes it when it ends, even if its launcher is gone
# shellcheck disable=SC2317  # called by the EXIT trap
remove_pid_file() { rm -f -- "$LOG_DIR/task-$task.pid"; }
trap remove_pid_file EXIT
exec 3>&2  # the caller's stderr, kept: what it must see goes there too, not only into the task's log
exec >>"$LOG_DIR/task-$task.out" 2>&1
echo "score-plugins: task $task on $(hostname) as array task ${SLURM_ARRAY_JOB_ID:-?}_${SLURM_ARRAY_TASK_ID}"
case "$task" in
  0) env_key=abc123; lockfile=/runs/r1/locks/abc123.txt; builder=/runs/r1/build_env.sh ;;
  1) env_key=def456; lockfile=/locks/d.txt; builder=/runs/r1/build_env.sh ;;
  *) echo "score-plugins: this job has no array task $task" >&2
     echo "score-plugins: this job has no array task $task (see $LOG_DIR/task-$task.out)" >&3; exit 2 ;;
esac
exec 3>&-

if [ "$ENV_MODE" = fresh ]; then
  env_path="${TMPDIR:-/tmp}/score-plugins-env-${SLURM_JOB_ID:-$$}-$task"
else
  env_path="$ENV_ROOT/$env_key"
fi
env_log="$LOG_DIR/env-$task.log"
env_status=0
bash "$builder" "$env_path" "$lockfile" >"$env_log" 2>&1 || env_status=$?

status=0
"$BASE_PYTHON" "$WORKER" run-task --manifest "$MANIFEST" --task "$task" \
  --env-python "$env_path/bin/python" --env-status "$env_status" --env-log "$env_log" || status=$?
if [ "$ENV_MODE" = fresh ]; then
  rm -rf -- "$env_path" "$env_path.lock"
fi
exit "$status"
