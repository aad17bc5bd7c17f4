"""Where a forget-stage step's time goes: ``torch.profiler`` over a few ``ForgetTrainer`` steps on the CPU.

    python benchmarks/profile_step.py                 # mini-clip-64, batch 32, bf16 autocast where the CPU is fast at it
    python benchmarks/profile_step.py --fp32 --steps 4

The same trainer as ``throughput.py`` (four streams of ``--batch`` images, LoRA on 8 vision modules, the teacher
cache filled beforehand). Prints the share of the steps' wall time spent in the collator, the student's forward,
the backward and the optimiser step (``record_function`` ranges of the Trainer and of this script), then the
operators with the most self CPU time.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import _trainer, build  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--fp32", action="store_true")
    p.add_argument("--rows", type=int, default=15)
    a = p.parse_args()
    from hf_unlearn import precision

    bf16 = not a.fp32 and precision.bf16_fast("cpu")
    trainer, collator = _trainer(build("mini-clip-64"), a.batch, a.steps, bf16, True, tempfile.mkdtemp())
    model = trainer.model
    model.train()
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    parts = {"collate": 0.0, "forward + loss": 0.0, "backward": 0.0, "optimizer": 0.0}

    def step(i, timed):
        t = time.perf_counter()
        with record_function("collate"):
            inputs = collator(list(range(i * a.batch, (i + 1) * a.batch)))
        t1 = time.perf_counter()
        with record_function("forward + loss"), trainer.accelerator.autocast():
            loss = trainer.compute_loss(model, inputs)
        t2 = time.perf_counter()
        with record_function("backward"):
            loss.backward()
        t3 = time.perf_counter()
        with record_function("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if timed:
            for k, v in zip(parts, (t1 - t, t2 - t1, t3 - t2, t4 - t3)):
                parts[k] += v

    for i in range(2):
        step(i % 4, False)  # warm-up: kernels primed
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(a.steps):
            step(i % 4, True)
    total = sum(parts.values())
    print(f"mini-clip-64, batch {a.batch} x 4 streams, {'bf16' if bf16 else 'fp32'}, {torch.get_num_threads()} threads: "
          f"{total / a.steps * 1000:.0f} ms a step")
    for k, v in parts.items():
        print(f"  {k:<16} {v / total:6.1%}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))


if __name__ == "__main__":
    main()
