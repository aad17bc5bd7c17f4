"""Throughput of the reference mini CLIP's image tower on this CPU: float32 vs bf16 autocast, eager vs SDPA.

    python benchmarks/precision_speed.py [--model ../shared/models/mini-clip-64] [--batch 128]

Why ``precision=auto`` picks bf16 + eager attention on CPUs with AMX or AVX512-BF16 (see hf_unlearn/precision.py).
"""
import argparse
import time

import torch
from transformers import CLIPModel


def timed(fn, repeats=3):
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="../shared/models/mini-clip-64")
    p.add_argument("--batch", type=int, default=128)
    a = p.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    size = CLIPModel.from_pretrained(a.model).config.vision_config.image_size
    x = torch.randn(a.batch, 3, size, size)
    print("| attention | precision | inference ms/image | train step ms/image |")
    print("|---|---|---|---|")
    for attn in ("sdpa", "eager"):
        model = CLIPModel.from_pretrained(a.model, attn_implementation=attn)
        for bf16 in (False, True):
            ctx = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)  # noqa: E731

            def infer():
                with torch.inference_mode(), ctx():
                    model.get_image_features(pixel_values=x)

            def train():
                with ctx():
                    model.get_image_features(pixel_values=x).pooler_output.float().sum().backward()

            model.eval()
            inf = timed(infer) / a.batch * 1e3
            model.train()
            tr = timed(train, 2) / a.batch * 1e3
            print(f"| {attn} | {'bf16 autocast' if bf16 else 'float32'} | {inf:.2f} | {tr:.2f} |")


if __name__ == "__main__":
    main()
