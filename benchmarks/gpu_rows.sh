#!/usr/bin/env bash
# Every GPU check of issue 17 in one run on a lent device machine (docs/BENCHMARKS.md, "GPU rows"):
# the throughput rows for CLIP ViT-B/32 and ViT-L/14 built from their configs (bf16), then the default command end to
# end on the GPU (training, restore, evaluation, audit). Results and logs go to $OUT (default: ./gpu_out).
# ONLY=demo skips the throughput rows. Packages the machine lacks travel as wheels in .whl (pip download ... -d .whl, see the device tool's README).
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft, accelerate, datasets; print(torch.__version__, transformers.__version__, peft.__version__, accelerate.__version__, datasets.__version__)" | tee -a "$OUT/gpu.txt"
if [ "${ONLY:-}" != demo ]; then
timeout 150 python3 benchmarks/throughput.py --arch vit-b32 --bf16 --batch 256 --steps 10 --rounds 2 --eval_images 4096 2>&1 | grep -v Warning | tee "$OUT/vit-b32.txt"
timeout 200 python3 benchmarks/throughput.py --arch vit-l14 --bf16 --batch ${L14_BATCH:-64} --steps 10 --rounds 2 --eval_images 2048 2>&1 | grep -v Warning | tee "$OUT/vit-l14.txt"
fi
rm -rf /tmp/demo_gpu /tmp/demo_cache
# the world's build (data generation and two pretrainings) took over 150 s on the H100 machine's CPU; the run itself ~70 s
( time HF_UNLEARN_CACHE=/tmp/demo_cache timeout 330 python3 -m accelerate.commands.launch recipes/forget_remind_restore.py --output_dir /tmp/demo_gpu ) > "$OUT/demo.log" 2>&1
echo "demo rc=$?" | tee -a "$OUT/gpu.txt"; tail -n 12 "$OUT/demo.log"
cp /tmp/demo_gpu/unlearning_report.json "$OUT/demo_report.json" 2>/dev/null || true
