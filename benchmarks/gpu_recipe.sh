#!/usr/bin/env bash
# The shipped model's recipe, larger: run this on a machine with a GPU (CUDA). The `cpu`
# config's detector at 224 px, batch 128, as many steps as BUDGET seconds allow (a short probe
# measures img/s, the cosine schedule is sized to it), then the best checkpoint exported as an
# fp16 bundle in parts of 15 MiB (small files to copy back):
#   bash benchmarks/gpu_recipe.sh [BUDGET]   # default 300 s; data: runs/gpu_data
#   (packed where the recipe ran: scripts/pack_gpu_data.py)
# Reassemble here: cat model.lorefd.part-* > gpu.lorefd (the bundle's checksum verifies it).
set -uo pipefail
BUDGET=${1:-300}
OUT=${OUT:-benchmarks/gpu-out}
DATA=${DATA:-runs/gpu_data}
WORK=${WORK:-/tmp/gpu_recipe}
mkdir -p "$OUT" "$WORK"
if [ "$BUDGET" -lt 120 ]; then echo "gpu_recipe: $BUDGET s left, too little to train" | tee "$OUT/gpu_recipe.log"; exit 0; fi
SIZE=${SIZE:-224}; BATCH=${BATCH:-128}; ITERS=${ITERS:-250}  # SIZE=64 BATCH=8 DEVICE=cpu: a smoke run
COMMON=(--config cpu --set data.image_size=$SIZE --set data.num_workers=${WORKERS:-14}
        --set train.batch_size=$BATCH --set train.lr=2e-3 --set train.iters_per_epoch=$ITERS
        --train "$DATA/train.csv" --val "$DATA/val.csv" --device "${DEVICE:-cuda}")
t0=$(date +%s)
python -m lorefd.cli train "${COMMON[@]}" --set train.epochs=1 --set train.iters_per_epoch=40 \
    --set train.warmup_steps=0 --out "$WORK/probe" > "$OUT/gpu_recipe_probe.log" 2>&1
ips=$(python -c "import json; print(json.load(open('$WORK/probe/summary.json'))['train_img_per_s'])" \
      2>/dev/null || echo 0)
left=$((BUDGET - ($(date +%s) - t0) - 45))  # 45 s: start-up, validation, export
epochs=$(python -c "print(max(1, int($left * $ips / $BATCH / $ITERS * 0.9)))")
echo "probe: $ips img/s -> $epochs epochs of $ITERS steps in ~$left s" | tee "$OUT/gpu_recipe.log"
python -m lorefd.cli train "${COMMON[@]}" --set train.epochs="$epochs" --set train.warmup_steps=300 \
    --out "$WORK/run" >> "$OUT/gpu_recipe.log" 2>&1
cp "$WORK/run/metrics.jsonl" "$WORK/run/summary.json" "$OUT/" 2>/dev/null
python -m lorefd.cli export "$WORK/run" --out "$WORK/gpu.lorefd" --half --margin 0.1 >> "$OUT/gpu_recipe.log" 2>&1 \
    && split -b 15m -d "$WORK/gpu.lorefd" "$OUT/model.lorefd.part-"
tail -3 "$OUT/gpu_recipe.log"
