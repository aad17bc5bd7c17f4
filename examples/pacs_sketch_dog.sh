#!/usr/bin/env bash
# Forget sketches of dogs in PACS with the reference mini CLIP, then check the result independently (float32).
set -euo pipefail
accelerate launch recipes/forget_remind_restore.py --config recipes/configs/pacs_sketch_dog.yaml "$@"
python -m hf_unlearn.eval_cli --model runs/pacs-sketch-dog --original ../shared/models/mini-clip-64 \
    --dataset ../shared/datasets/pacs --forget "label=dog,domain=sketch" \
    --zeroshot_datasets ../shared/datasets/cifar10,../shared/datasets/imagenette
