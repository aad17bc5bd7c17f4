"""Forget -> remind -> restore on a CLIP checkpoint.

    accelerate launch recipes/forget_remind_restore.py                       # offline demo world
    accelerate launch recipes/forget_remind_restore.py --config recipes/configs/pacs_sketch_dog.yaml
    accelerate launch recipes/forget_remind_restore.py --model_name_or_path openai/clip-vit-base-patch32 \
        --dataset <hub dataset> --forget "label=dog,domain=sketch" --output_dir runs/x

Flags override values from ``--config``. This file only parses and calls the library.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # runs from a clone without install

from hf_unlearn.cli import console  # noqa: E402

if __name__ == "__main__":
    console()
