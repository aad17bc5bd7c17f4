"""What peft's cast of each LoRA adapter's input costs a forget step, and what the adapters cost, side by side.

    python benchmarks/lora_cast.py [--rounds 3] [--steps 12]

mini-clip-64, ForgetTrainer steps of 32 images a stream under the run's precision (``auto``), the variants interleaved
round by round; each figure is the median step time of its rounds (the first two steps of a run left out).
"""
import argparse
import copy
import os
import statistics
import sys
import tempfile
import time

from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import TrainerCallback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput  # noqa: E402

from hf_unlearn import precision  # noqa: E402
from hf_unlearn.method import with_lora  # noqa: E402
from hf_unlearn.stages import set_trainable  # noqa: E402

KINDS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
LATE = [f"vision_model.encoder.layers.{b}.{k}" for b in (6, 7) for k in KINDS][-8:]  # 8 modules, blocks 6-7
SPREAD = [f"vision_model.encoder.layers.{b}.{k}" for b in range(8) for k in ("self_attn.v_proj", "mlp.fc2")]  # 16, blocks 0-7


class _Clock(TrainerCallback):
    def __init__(self):
        self.t = []

    def on_step_end(self, *args, **kwargs):
        self.t.append(time.perf_counter())


def _student(modules, lora: bool, cast: bool):
    """The product's adapters (``method.with_lora``) on ``modules``, peft's input cast back on if ``cast``; or the
    modules themselves trained."""
    def build(model):
        if not lora:
            return set_trainable(model, modules)
        model = with_lora(model, modules, 8, 16, 0.0)
        for layer in model.modules():
            if isinstance(layer, BaseTunerLayer):
                layer.cast_input_dtype_enabled = cast
        return model
    return build


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=12)
    a = p.parse_args()
    bf16 = precision.use_bf16("auto")
    precision.set_default(bf16)
    variants = {
        "LoRA, 8 modules in blocks 6-7, peft's input cast (before)": (LATE, True, True),
        "LoRA, 8 modules in blocks 6-7, no input cast (now)": (LATE, True, False),
        "LoRA, 16 modules in blocks 0-7, peft's input cast (before)": (SPREAD, True, True),
        "LoRA, 16 modules in blocks 0-7, no input cast (now)": (SPREAD, True, False),
        "the 8 modules of blocks 6-7 fully tuned (no adapters)": (LATE, False, False),
    }
    base = throughput.build("mini-clip-64")
    times = {name: [] for name in variants}
    for _ in range(a.rounds):
        for name, (modules, lora, cast) in variants.items():
            with tempfile.TemporaryDirectory() as out:
                trainer, _ = throughput._trainer(copy.deepcopy(base), 32, a.steps, bf16, True, out, student=_student(modules, lora, cast))
                clock = _Clock()
                trainer.add_callback(clock)
                trainer.train()
            times[name].append(statistics.median(b - t for t, b in zip(clock.t[2:], clock.t[3:])))
    first = None
    print(f"precision: {'bf16 autocast' if bf16 else 'fp32'}; median step seconds over {a.rounds} rounds")
    for name, ts in times.items():
        m = statistics.median(ts)
        first = first or m
        print(f"{name:62s} {m:.3f} s  {m / first:.2f}x")


if __name__ == "__main__":
    main()
