#!/usr/bin/env bash
# Forget sketches of dogs in PACS with the reference mini CLIP, then check the result independently (float32).
# MODEL, DATASET, FORGET, ZEROSHOT and OUT override the defaults; extra arguments go to the recipe.
set -euo pipefail
MODEL=${MODEL:-../shared/models/mini-clip-64}
DATASET=${DATASET:-../shared/datasets/pacs}
FORGET=${FORGET:-label=dog,domain=sketch}
ZEROSHOT=${ZEROSHOT:-../shared/datasets/cifar10,../shared/datasets/imagenette}
OUT=${OUT:-runs/pacs-sketch-dog}
accelerate launch recipes/forget_remind_restore.py --model_name_or_path "$MODEL" --dataset "$DATASET" --forget "$FORGET" \
    --zeroshot_datasets "$ZEROSHOT" --output_dir "$OUT" "$@"
python -m hf_unlearn.eval_cli --model "$OUT" --original "$MODEL" --dataset "$DATASET" --forget "$FORGET" --zeroshot_datasets "$ZEROSHOT"
