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
# Each side of a pair has its own environment: the model's process runs in the model's, the benchmark's process
# in the benchmark's, so nothing the model requires is installed where the benchmark runs.
case "$task" in
  0) model_key=abc123; model_lockfile=/runs/r1/locks/abc123.txt; model_builder=/runs/r1/build_env.sh
     bench_key=bench1; bench_lockfile=/locks/b.txt; bench_builder=/runs/r1/build_env.sh ;;
  1) model_key=def456; model_lockfile=/locks/d.txt; model_builder=/runs/r1/build_env.sh
     bench_key=def456; bench_lockfile=/locks/d.txt; bench_builder=/c.sh ;;
  *) echo "score-plugins: this job has no array task $task" >&2
     echo "score-plugins: this job has no array task $task (see $LOG_DIR/task-$task.out)" >&3; exit 2 ;;
esac
exec 3>&-

if [ "$ENV_MODE" = fresh ]; then
  model_env="${TMPDIR:-/tmp}/score-plugins-env-${SLURM_JOB_ID:-$$}-$task-model"
  bench_env="${TMPDIR:-/tmp}/score-plugins-env-${SLURM_JOB_ID:-$$}-$task-benchmark"
else
  model_env="$ENV_ROOT/$model_key"
  bench_env="$ENV_ROOT/$bench_key"
fi
if [ "$model_key" = "$bench_key" ]; then
  bench_env="$model_env"  # both sides lock the same: one environment, built once
fi
env_log="$LOG_DIR/env-$task.log"
env_status=0
{
  bash "$model_builder" "$model_env" "$model_lockfile" &&
    if [ "$bench_env" != "$model_env" ]; then bash "$bench_builder" "$bench_env" "$bench_lockfile"; fi
} >"$env_log" 2>&1 || env_status=$?

status=0
"$BASE_PYTHON" "$WORKER" run-task --manifest "$MANIFEST" --task "$task" \
  --env-python "$bench_env/bin/python" --model-python "$model_env/bin/python" \
  --env-status "$env_status" --env-log "$env_log" || status=$?
if [ "$ENV_MODE" = fresh ]; then
  rm -rf -- "$model_env" "$model_env.lock" "$bench_env" "$bench_env.lock"
fi
exit "$status"
