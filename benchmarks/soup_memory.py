"""Time and peak memory of the restore soup on two random ViT-L/14-sized CLIP checkpoints: streaming against naive.

    python benchmarks/soup_memory.py                  # ViT-L/14 (428 M parameters, 1.7 GB a checkpoint in float32)
    python benchmarks/soup_memory.py --arch vit-b32   # a smaller pair, for a quick look

The two checkpoints hold random tensors with the names and shapes of ``CLIPModel`` built from the architecture's
config on the meta device (nothing is downloaded, no model is initialised). Each way of mixing runs in its own fresh
process, whose peak resident memory (``ru_maxrss``) is reported: (streaming) ``hf_unlearn.soup.soup_checkpoints``,
one tensor per input read at a time; (naive) ``load_file`` both, average every tensor, ``save_file``. Both outputs
are compared tensor by tensor at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

ALPHA = 0.7


def write_pair(arch: str, folder: str) -> int:
    """Two checkpoint folders ``a`` and ``b`` of random weights with ``arch``'s tensor names; returns the bytes of one."""
    from throughput import ARCHS  # the same architecture table as the throughput benchmark
    from transformers import CLIPConfig, CLIPModel

    width, layers, heads, patch, size, proj = ARCHS[arch]
    text = dict(hidden_size=512 if arch == "vit-b32" else 768, intermediate_size=2048 if arch == "vit-b32" else 3072, num_hidden_layers=12,
                num_attention_heads=8 if arch == "vit-b32" else 12, max_position_embeddings=77)
    vision = dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers, num_attention_heads=heads, patch_size=patch, image_size=size)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=proj)
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in CLIPModel(config).state_dict().items()}
    nbytes = 0
    for i, name in enumerate("ab"):
        g = torch.Generator().manual_seed(i)
        tensors = {k: torch.randn(shape, generator=g).to(dtype) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype)
                   for k, (shape, dtype) in shapes.items()}
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        save_file(tensors, os.path.join(folder, name, "model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(os.path.join(folder, name))
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        del tensors
    return nbytes


def child(way: str, folder: str) -> None:
    a, b, out = (os.path.join(folder, n) for n in ("a", "b", f"out-{way}"))
    t0 = time.perf_counter()
    if way == "streaming":
        from hf_unlearn.soup import soup_checkpoints

        soup_checkpoints([a, b], [ALPHA, 1 - ALPHA], out)
    else:
        sa, sb = load_file(os.path.join(a, "model.safetensors")), load_file(os.path.join(b, "model.safetensors"))
        mixed = {k: (ALPHA * v + (1 - ALPHA) * sb[k]) if v.is_floating_point() else v for k, v in sa.items()}
        os.makedirs(out, exist_ok=True)
        save_file(mixed, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="vit-l14", choices=["vit-b32", "vit-l14"])
    p.add_argument("--child", choices=["streaming", "naive"])
    p.add_argument("--folder")
    a = p.parse_args()
    if a.child:
        return child(a.child, a.folder)
    with tempfile.TemporaryDirectory(dir=os.environ.get("SOUP_BENCH_DIR")) as folder:
        t0 = time.perf_counter()
        nbytes = write_pair(a.arch, folder)
        print(f"{a.arch}: two random checkpoints of {nbytes / 2**30:.2f} GiB each, written in {time.perf_counter() - t0:.0f} s")
        rows = {}
        for way in ("streaming", "naive"):
            out = subprocess.run([sys.executable, __file__, "--child", way, "--folder", folder], check=True, capture_output=True, text=True)
            rows[way] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {way:<9}  {rows[way]['seconds']:6.1f} s  peak RSS {rows[way]['peak_rss_bytes'] / 2**30:5.2f} GiB"
                  f" = {rows[way]['peak_rss_bytes'] / nbytes:.2f} checkpoints")
        s = load_file(os.path.join(folder, "out-streaming", "model.safetensors"))
        n = load_file(os.path.join(folder, "out-naive", "model.safetensors"))
        worst = max(float((s[k].float() - n[k].float()).abs().max()) for k in s)
        print(f"  streaming / naive: time {rows['streaming']['seconds'] / rows['naive']['seconds']:.2f}, "
              f"peak RSS {rows['streaming']['peak_rss_bytes'] / rows['naive']['peak_rss_bytes']:.2f}; largest difference {worst:.1e}")


if __name__ == "__main__":
    main()
