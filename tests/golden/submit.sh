#!/bin/bash
# score-plugins: submit run r1 to Slurm by hand, one array job per tier's job script.
# Each Slurm job id is recorded in slurm-jobs beside this script, so that `score-plugins ingest` and
# `score-plugins reconcile` account for a task Slurm killed (its state and attempt row) instead of leaving
# its pairs RENDERED. Every value below is single-quoted on purpose: a '$(...)' in a path stays text.
# shellcheck disable=SC2016
set -euo pipefail

RUN_DIR='/runs/r1 $(x)'
cd "$RUN_DIR"
# script, its first task in the run, its task count
submit() {
  local out
  out=$(sbatch --parsable --output="$RUN_DIR/logs/slurm-%A_%a.out" "$1")
  echo "${out%%;*}@$2+$3 $1" >>"$RUN_DIR/slurm-jobs"
  echo "score-plugins: $1 submitted as Slurm job ${out%%;*} (tasks $2 to $(($2 + $3 - 1)) of the run)"
}
submit job.sh 0 2
submit job-large.sh 2 1
echo "score-plugins: when the jobs have ended: score-plugins ingest $RUN_DIR"
