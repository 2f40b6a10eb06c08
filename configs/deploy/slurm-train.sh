#!/usr/bin/env bash
# Train on 2 nodes × 8 GPUs (16 data-parallel ranks of c10d, one per GPU), launched by srun.
#   sbatch configs/deploy/slurm-train.sh
# Each task reads SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID; rank 0 (the first node) hosts
# the rendezvous. The global batch is train.batch_size × 16 × train.accumulate and the
# learning rate follows it (blr × global batch / 256). OUT must be on a filesystem every node
# sees: rank 0 writes the checkpoints there and every rank resumes from them, so a requeued
# job (--requeue) goes on where it stopped.
#SBATCH --job-name=lightgen-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=12
#SBATCH --requeue
set -euo pipefail
MANIFEST=${MANIFEST:-runs/shapes/manifest.json}
CONFIG=${CONFIG:-configs/train-base.toml}
OUT=${OUT:-runs/train-base}
export MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
export MASTER_PORT=${MASTER_PORT:-29500}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$SLURM_CPUS_PER_TASK}
# libtorch's CUDA libraries (the torch wheel's lib/ folder; see docs/student.md, "GPU").
export LD_LIBRARY_PATH=${TORCH_LIB:-$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__) + "/lib")')}:${LD_LIBRARY_PATH:-}
# --resume starts fresh when OUT has no checkpoint yet; --device cuda = each rank's own GPU.
srun lightgen -q train -m "$MANIFEST" -c "$CONFIG" --out "$OUT" --device cuda --resume
