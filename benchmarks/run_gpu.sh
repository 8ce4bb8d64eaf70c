#!/usr/bin/env bash
# Every GPU measurement of benchmarks/RESULTS.md in one call (a session with a lent H100/H200):
#   bash benchmarks/run_gpu.sh            # logs and JSON go to $OUT (or benchmarks/gpu-out)
# Needs torch, timm, OpenCV on the machine; lorefd is installed without dependencies.
set -uo pipefail
OUT=${OUT:-benchmarks/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2 || export PYTHONPATH=$PWD/src
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$OUT/gpu.txt"
run() {  # name, command...
    local name=$1; shift
    echo "== $name: $*" | tee -a "$OUT/all.log"
    timeout 240 "$@" 2>&1 | tee "$OUT/$name.log" | tail -5 | tee -a "$OUT/all.log"
}
run masking_cuda python -m pytest -q tests/test_keyregion.py -k cuda -p no:cacheprovider
run s1_eager     python benchmarks/bench_pretrain.py --config paper --device cuda --steps 50 --warmup 10
run s1_b256      python benchmarks/bench_pretrain.py --config paper --device cuda --batch-size 256 --steps 30 --warmup 10
run s1_compiled  python benchmarks/bench_pretrain.py --config paper --device cuda --batch-size 256 --steps 30 --warmup 10 --compile
run s2_lre       python benchmarks/bench_stage2.py --config paper --device cuda --steps 30 --json "$OUT/s2_lre.json"
run s2_lre_b256  python benchmarks/bench_stage2.py --config paper --device cuda --batch-size 256 --eval-batch-size 512 --steps 20 --json "$OUT/s2_lre_b256.json"
run s2_xception  python benchmarks/bench_stage2.py --config paper --device cuda --detector xception --steps 30 --json "$OUT/s2_xception.json"
