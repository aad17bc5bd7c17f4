"""Images per second of a no-grad image forward at several batch sizes, rounds interleaved (CPU: mini-clip-64).

    python benchmarks/inference_batch.py --bf16          # batches 32, 64, 128, 256; also with bf16 weights, eager and SDPA

What ``prompts.inference_batch_size`` is chosen by. Each round runs every setting once, in the same order; the figure
is the median over rounds, so the machine's drift falls on every setting alike.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from throughput import build


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="mini-clip-64")
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--batches", default="32,64,128,256")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (how a run infers on a CPU with AMX or AVX512-BF16), and bf16 weights (eager and SDPA attention) too")
    a = p.parse_args()
    model = build(a.arch).eval()
    size = model.config.vision_config.image_size
    x = torch.randn(a.images, 3, size, size)
    settings = [(f"autocast, batch {b}" if a.bf16 else f"fp32, batch {b}", model, int(b), torch.float32) for b in a.batches.split(",")]
    if a.bf16:
        half = copy.deepcopy(model).to(torch.bfloat16)
        settings += [(f"bf16 weights, batch {b}", half, int(b), torch.bfloat16) for b in a.batches.split(",")]
        sdpa = copy.deepcopy(half)
        sdpa.set_attn_implementation("sdpa")  # what precision.inference_model runs
        settings += [(f"bf16 weights, sdpa, batch {b}", sdpa, int(b), torch.bfloat16) for b in a.batches.split(",")]
    rates = {name: [] for name, *_ in settings}
    for _ in range(a.rounds):
        for name, m, batch, dtype in settings:
            t0 = time.perf_counter()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16 and dtype == torch.float32):
                for i in range(0, len(x), batch):
                    m.get_image_features(pixel_values=x[i : i + batch].to(dtype))
            rates[name].append(len(x) / (time.perf_counter() - t0))
    print(f"{a.arch}, {a.images} images, {torch.get_num_threads()} threads, median of {a.rounds} rounds")
    for name, r in rates.items():
        print(f"  {name:<30} {statistics.median(r):7.1f} img/s   rounds: {', '.join(f'{v:.0f}' for v in r)}")


if __name__ == "__main__":
    main()
