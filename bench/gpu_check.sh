#!/usr/bin/env bash
# The GPU check in one command (bench/gpu_check.py writes results/bench/gpu.md and gpu.json). With ME_SDIST naming
# a local MinkowskiEngine-0.5.4.tar.gz it first builds MinkowskiEngine (envs/install_minkowski.sh, offline, at most
# 5 minutes) and measures it beside ours; a failed build is reported with its log's last lines.
#   bash bench/gpu_check.sh                 # on a CUDA machine, under 8 minutes
#   bash bench/gpu_check.sh --smoke         # anywhere, CPU too: tiny sizes, seconds
#   ME_SDIST=/path/MinkowskiEngine-0.5.4.tar.gz bash bench/gpu_check.sh
# GPU_CHECK_OUT sets the JSON's path (default results/bench/gpu.json; the Markdown goes beside it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-$(command -v python || command -v python3)}
args=(--out "${GPU_CHECK_OUT:-results/bench/gpu.json}")
if [ -n "${ME_SDIST:-}" ] && [[ " $* " != *" --smoke "* ]]; then
    log=$(mktemp)
    echo "building MinkowskiEngine from $ME_SDIST (log: $log)"
    if ! PYTHON="$python" timeout 300 bash envs/install_minkowski.sh >"$log" 2>&1; then
        echo "MinkowskiEngine did not build; the report shows the end of $log"
    fi
    args+=(--minkowski-log "$log")
fi
exec "$python" bench/gpu_check.py "${args[@]}" "$@"
