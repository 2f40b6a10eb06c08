#!/usr/bin/env bash
# Distill on 16 Slurm workers that share nothing but an S3 bucket, then merge once.
#   sbatch configs/deploy/slurm-distill.sh            (submits the array and the merge)
# Each array task is worker SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT; a failed task
# can be resubmitted alone (sbatch --array=5 …): finished parts are skipped.
#SBATCH --job-name=lightgen-distill
#SBATCH --array=0-15
#SBATCH --cpus-per-task=8
#SBATCH --gres=gpu:1
set -euo pipefail
CONFIG=${CONFIG:-configs/shapes.toml}
STORE=${STORE:-s3://my-bucket/lightgen/shapes}   # AWS_* credentials come from the environment
SCRATCH=${TMPDIR:-/tmp}/lightgen-$SLURM_JOB_ID

if [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
  # worker I/N from SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT
  lightgen -q distill -c "$CONFIG" --store "$STORE" --output-dir "$SCRATCH"
  # the last task to start submits the merge, which waits for the whole array
  if [ "$SLURM_ARRAY_TASK_ID" = "$SLURM_ARRAY_TASK_MAX" ]; then
    sbatch --dependency=afterok:"$SLURM_ARRAY_JOB_ID" --job-name=lightgen-merge \
      --wrap "lightgen manifest merge -c $CONFIG --store $STORE --output-dir runs"
  fi
fi
