#!/usr/bin/env bash
# The prepared GPU check: one command, one GPU, under 8 minutes; prints its figures.
#
#   bash bench/gpu_check.sh                 # on a GPU machine, from anywhere in the repo
#   bash bench/gpu_check.sh --no-compile    # without the torch.compile runs
#   bash bench/gpu_check.sh --tiny          # every part at tiny size, on CPU too (tests)
#
# Parts (bench/gpu_check.py says what each measures): the environment; ASTRA FP3D_CUDA against
# the CPU path on one knee phantom, with the stated tolerances; the paper-scale DRR time; study A
# and study B training throughput at paper size, fp32 eager vs bf16 + channels_last, the ratio
# (target >= 2x); sampling throughput per model; torch.compile as time allows; peak GPU memory
# of each. Without a GPU the GPU parts are skipped, each with a line saying so.
#
# Needs kneesynth installed with a CUDA build of torch (README: "On a GPU machine install the
# CUDA build of torch that fits your driver"); activates .venv when no environment is active.
# The Python part keeps to a 450 s budget; `timeout` stops it for sure at 8 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${VIRTUAL_ENV:-}" && -f .venv/bin/activate ]]; then
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi
exec timeout --signal=INT --kill-after=15 480 python bench/gpu_check.py "$@"
