"""Two costs of a forget-stage step on the CPU that are not the model's matmuls: CLIP's quick-GELU and autocast's
casts of the frozen weights, each timed against what a faster form would save.

    python benchmarks/step_speed.py                        # mini-clip-64, batch 32 x 4 streams, bf16 where fast
    python benchmarks/step_speed.py --threads 2 --rounds 3

The throughput benchmark's trainer and raw loop (four streams of ``--batch`` images, LoRA on 8 vision modules, the
teacher cache filled), one fresh trainer per variant, all of them stepped in lockstep (throughput's ``Baton``) so that
the machine's drift falls on every variant alike; the median step time of each over ``--rounds`` rounds (the first two
steps of each round are warm-up: the compiled form compiles there), as a ratio to eager:
  eager     transformers' ``QuickGELUActivation``, ``x * sigmoid(1.702 x)`` (what runs today);
  silu      the same function as ``silu(1.702 x) / 1.702`` (one fused ATen kernel in place of sigmoid and a product);
  compiled  ``torch.compile`` of the eager form (inductor fuses it into one loop; needs a C++ compiler);
  identity  no activation at all: the wrong function, timed only as the bound on what any faster form can save;
  bf16 weights  eager activation, the frozen vision ``Linear`` weights (LoRA's base layers) stored in bf16, which is
            what autocast casts them to on every call anyway (the same numbers; not usable as is in the product: a
            LoRA merge into bf16 base weights would lose precision, so the fp32 copies must come back before it).
The first losses of each are printed: the real forms agree to bf16 rounding; bf16 weights to the digit.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import Baton, _raw_loop, _trainer, build  # noqa: E402


def _eager(x):
    return x * torch.sigmoid(1.702 * x)


class _Activation(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


VARIANTS = {
    "eager": None,
    "silu": lambda x: F.silu(x * 1.702) * (1 / 1.702),
    "compiled": torch.compile(_eager, dynamic=False),
    "identity": lambda x: x,
    "bf16 weights": None,
}


def _variant(name: str, batch: int, steps: int, bf16: bool):
    """A fresh trainer whose student is changed as the variant says."""
    torch.manual_seed(0)
    trainer, collator = _trainer(build("mini-clip-64"), batch, steps, bf16, True, tempfile.mkdtemp())
    model = trainer.model
    if name == "bf16 weights" and bf16:
        for module_name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad and "vision_model" in module_name:
                m.weight.data = m.weight.data.bfloat16()
                if m.bias is not None:
                    m.bias.data = m.bias.data.bfloat16()
    if VARIANTS[name] is not None:
        for m in model.modules():
            if type(getattr(m, "activation_fn", None)).__name__ == "QuickGELUActivation":
                m.activation_fn = _Activation(VARIANTS[name])
    return trainer, collator


def lockstep_round(batch: int, steps: int, bf16: bool) -> tuple[dict, dict]:
    """Every variant built, then all stepped in turn; (step times without warm-up, losses) per variant."""
    built = {name: _variant(name, batch, steps + 2, bf16) for name in VARIANTS}
    baton, times, losses, threads = Baton(len(VARIANTS)), {}, {name: [] for name in VARIANTS}, []
    for i, name in enumerate(VARIANTS):
        def work(name=name, i=i):
            trainer, collator = built[name]
            times[name] = _raw_loop(trainer, collator, batch, steps + 2, bf16, baton, i, losses[name])[2:]
        threads.append(threading.Thread(target=work, name=name))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times, losses


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fp32", action="store_true")
    a = p.parse_args()
    from hf_unlearn import precision

    torch.set_num_threads(a.threads)
    bf16 = not a.fp32 and precision.bf16_fast("cpu")
    times, first = {v: [] for v in VARIANTS}, {}
    for _ in range(a.rounds):
        round_times, losses = lockstep_round(a.batch, a.steps, bf16)
        for v in VARIANTS:
            times[v] += round_times[v]
            first.setdefault(v, [round(x, 4) for x in losses[v][:4]])
    base = statistics.median(times["eager"])
    print(f"mini-clip-64, batch {a.batch} x 4 streams, {'bf16' if bf16 else 'fp32'}, {a.threads} thread(s), "
          f"{a.rounds} rounds x {a.steps} steps")
    for v in VARIANTS:
        med = statistics.median(times[v])
        print(f"  {v:<12} {med * 1000:7.0f} ms a step  {med / base:5.3f}x eager   first losses {first[v]}")


if __name__ == "__main__":
    main()
