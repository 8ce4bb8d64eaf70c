#!/usr/bin/env bash
# Every GPU measurement of benchmarks/RESULTS.md in one run: run this on a machine with a GPU
# (CUDA), from the repository root; then the recipe's larger training (benchmarks/gpu_recipe.sh)
# in the time left of TOTAL seconds, when the packed data is there (scripts/pack_gpu_data.py):
#   bash benchmarks/run_gpu.sh        # TOTAL=560 OUT=benchmarks/gpu-out DATA=runs/gpu_data
# Logs and JSON end in $OUT/logs.tgz, the trained bundle in $OUT/model.lorefd.part-NN (parts of
# 15 MiB, few files to copy back). Needs torch, timm, OpenCV there; lorefd is installed without
# deps.
set -uo pipefail
OUT=${OUT:-benchmarks/gpu-out}
TOTAL=${TOTAL:-560}
START=$(date +%s)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2 || export PYTHONPATH=$PWD/src
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"
run() {  # name, command...
    local name=$1; shift
    echo "== $name: $*" | tee -a "$OUT/all.log"
    timeout 120 "$@" 2>&1 | tee "$OUT/$name.log" | tail -5 | tee -a "$OUT/all.log"
}
run masking_cuda python -m pytest -q tests/test_keyregion.py -k cuda -p no:cacheprovider
run s1_eager     python benchmarks/bench_pretrain.py --config paper --device cuda --steps 50 --warmup 10
run s1_b256      python benchmarks/bench_pretrain.py --config paper --device cuda --batch-size 256 --steps 30 --warmup 10
run s1_compiled  python benchmarks/bench_pretrain.py --config paper --device cuda --batch-size 256 --steps 30 --warmup 10 --compile
run s2_lre       python benchmarks/bench_stage2.py --config paper --device cuda --steps 30 --json "$OUT/s2_lre.json"
run s2_lre_b256  python benchmarks/bench_stage2.py --config paper --device cuda --batch-size 256 --eval-batch-size 512 --steps 20 --json "$OUT/s2_lre_b256.json"
run s2_baseline  python benchmarks/bench_stage2.py --config paper --device cuda --detector baseline --steps 30 --json "$OUT/s2_baseline.json"
if [ -d "${DATA:-runs/gpu_data}" ]; then
    OUT="$OUT" bash benchmarks/gpu_recipe.sh $((TOTAL - ($(date +%s) - START)))
else
    echo "no ${DATA:-runs/gpu_data}: the recipe's training skipped (scripts/pack_gpu_data.py)" | tee -a "$OUT/all.log"
fi
(cd "$OUT" && tar czf logs.tgz --exclude 'model.lorefd.part-*' --exclude logs.tgz . \
    && find . -type f ! -name logs.tgz ! -name 'model.lorefd.part-*' -delete)
ls -la "$OUT"
