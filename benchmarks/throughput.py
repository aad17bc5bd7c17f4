"""Throughput of a forget-stage step and of evaluation, side by side in one process, as ratios.

    python benchmarks/throughput.py                                   # CPU: ../shared/models/mini-clip-64, fp32
    python benchmarks/throughput.py --arch vit-b32 --bf16 --batch 256 # GPU: CLIP ViT-B/32 from its config (random weights)

Training, on the same model, batch, dtype and streams (forget / retain / other / proxy, each ``--batch`` images a
step): (raw) a bare PyTorch loop with AdamW around the forget trainer's own ``compute_loss`` on batches collated
beforehand (student forward and backward on every stream, the teacher's embeddings, the same losses); (trainer)
``ForgetTrainer.train`` for the same steps, its collation included; (no teacher) the trainer with every teacher
term off (distillation weights 0, the teacher-free ``similarity`` forget loss): the same student work, no teacher;
(live teacher) the trainer with the teacher run on every batch (``--no_precompute_teacher``). The teacher's one pass
over the fixed streams (``TeacherCache``) is timed on its own, once per run, and left out of the per-step rates.
The four train in lockstep, one step of each in turn (threads passing a baton), and each rate is from its median
step time, so that the machine's drift falls on all of them alike. Evaluation: ``evaluate_sets`` against a bare batched
``get_image_features`` forward of what it runs (``precision.inference_model``: under bf16 a bf16 copy with SDPA
attention), and under bf16 the same forward under autocast with float32 weights, how evaluation ran before.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time

import torch
from transformers import TrainerCallback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ARCHS = {  # (vision width, layers, heads, patch, image size, projection)
    "vit-b32": (768, 12, 12, 32, 224, 512),
    "vit-l14": (1024, 24, 16, 14, 224, 768),
}


def build(arch: str):
    from transformers import CLIPConfig, CLIPModel

    if arch == "mini-clip-64":
        return CLIPModel.from_pretrained(os.path.join(ROOT, "..", "shared", "models", "mini-clip-64"), attn_implementation="eager")
    width, layers, heads, patch, size, proj = ARCHS[arch]
    text = dict(hidden_size=512 if arch == "vit-b32" else 768, intermediate_size=2048 if arch == "vit-b32" else 3072, num_hidden_layers=12,
                num_attention_heads=8 if arch == "vit-b32" else 12, max_position_embeddings=77)
    vision = dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers, num_attention_heads=heads, patch_size=patch, image_size=size)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=proj))


def _trainer(model, batch: int, steps: int, bf16: bool, teacher_terms: bool, out: str, cache: bool = True, student=None):
    """A ForgetTrainer on random images; ``student(model)`` makes the trained model (default: the product's LoRA,
    ``method.with_lora``, on the first 8 vision modules)."""
    from hf_unlearn.data import ImageSet, IndexDataset, UnlearningCollator
    from hf_unlearn.method import with_lora
    from hf_unlearn.selection import candidate_modules
    from hf_unlearn.teacher import TeacherCache, frozen_copy
    from hf_unlearn.trainers import ForgetConfig, ForgetTrainer

    size, n_classes, device = model.config.vision_config.image_size, 10, "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(0)
    streams = {k: ImageSet(torch.randn(4 * batch, 3, size, size, generator=g), torch.randint(n_classes, (4 * batch,), generator=g))
               for k in ("forget", "retain", "other")}
    tokens = {"input_ids": torch.randint(1, 400, (n_classes * 4, 12), generator=g), "attention_mask": torch.ones(n_classes * 4, 12, dtype=torch.long)}
    teacher = frozen_copy(model)
    with torch.no_grad():
        bank = torch.nn.functional.normalize(model.get_text_features(**tokens).pooler_output.view(n_classes, 4, -1).mean(1), dim=-1)
    weights = {} if teacher_terms else dict(retain_kd_weight=0.0, other_kd_weight=0.0, embed_distill_weight=0.0, proxy_weight=0.0, forget_loss="similarity")
    config = ForgetConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=1e-4, report_to="none", save_strategy="no",
                          logging_steps=10**6, disable_tqdm=True, bf16=bf16, use_cpu=device == "cpu", dataloader_num_workers=0, **weights)
    student = (student or (lambda m: with_lora(m, candidate_modules(m, "vision")[:8], 8, 16, 0.0)))(model)
    collator = UnlearningCollator("forget", streams, proxy=True, seed=0)
    teacher_cache = TeacherCache(teacher, collator.streams) if cache else None
    trainer = ForgetTrainer(model=student, args=config, train_dataset=IndexDataset(4 * batch), data_collator=collator, teacher=teacher,
                            class_embeds=bank, prompt_tokens=tokens, n_templates=4, teacher_cache=teacher_cache)
    if teacher_cache is not None:
        teacher.to(trainer.args.device)
        t0 = time.perf_counter()
        with trainer.accelerator.autocast():  # what the trainer's steps would fill it under
            for name in collator.streams:
                teacher_cache.embeddings(name)
        trainer.precompute_s = time.perf_counter() - t0
    return trainer, collator


def _sync() -> None:
    """A GPU step is timed once its kernels have run, not when Python has queued them."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Baton:
    """Round-robin turns among threads: one step of each variant in turn, so every variant's steps meet the same
    machine. This machine's speed drifts by +-10 % within a minute, more than the gaps measured; variants run one
    after the other would compare the drift."""

    def __init__(self, n: int):
        self.turn, self.active, self.cond = 0, list(range(n)), threading.Condition()

    def wait(self, i: int) -> float:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == i)
        return time.perf_counter()

    def _next(self, i: int) -> None:
        if self.active:
            later = [j for j in self.active if j > i]
            self.turn = later[0] if later else self.active[0]

    def done(self, i: int, leave: bool = False) -> None:
        with self.cond:
            if leave:
                self.active.remove(i)
            self._next(i)
            self.cond.notify_all()


class LockstepClock(TrainerCallback):
    """A Trainer's steps in turn with the other variants': each step timed from its turn to its end, the Trainer's own
    work between steps (collation, logging, scheduler, clipping) included."""

    def __init__(self, baton: Baton, i: int):
        self.baton, self.i, self.steps, self.t0 = baton, i, [], None

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = self.baton.wait(self.i)

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        self.steps.append(time.perf_counter() - self.t0)
        self.baton.done(self.i)
        self.t0 = self.baton.wait(self.i)

    def on_train_end(self, args, state, control, **kwargs):
        self.baton.done(self.i, leave=True)


def _raw_loop(trainer, collator, batch: int, steps: int, bf16: bool, baton: Baton, i: int, losses: list | None = None) -> list[float]:
    """The same compute_loss in a bare loop (AdamW, no scheduler or clipping) on batches collated beforehand;
    each step's loss appended to ``losses`` when given."""
    model = trainer.model.to(trainer.args.device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batches = [collator(list(range(j * batch, (j + 1) * batch))) for j in range(4)]
    times = []
    for step in range(steps):
        t0 = baton.wait(i)
        inputs = {k: {kk: vv.to(trainer.args.device) for kk, vv in v.items()} for k, v in batches[step % 4].items()}
        with torch.autocast(trainer.args.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = trainer.compute_loss(model, inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync()
        times.append(time.perf_counter() - t0)
        if losses is not None:
            losses.append(loss.item())
        baton.done(i, leave=step == steps - 1)
    return times


VARIANTS = ("raw", "trainer", "no teacher", "live teacher")  # name -> (teacher terms, teacher cache) below


def train_rates(arch: str, batch: int, steps: int, bf16: bool) -> dict:
    """Every variant built first, then all trained in lockstep; rates from the median step time (the first two steps
    of each are warm-up and left out)."""
    out = tempfile.mkdtemp()
    setups = {"raw": (True, True), "trainer": (True, True), "no teacher": (False, False), "live teacher": (True, False)}
    built = {name: _trainer(build(arch), batch, steps + 2, bf16, setups[name][0], out, cache=setups[name][1]) for name in VARIANTS}
    baton, times, threads = Baton(len(VARIANTS)), {}, []
    for i, name in enumerate(VARIANTS):
        trainer, collator = built[name]
        if name == "raw":
            def work(trainer=trainer, collator=collator, i=i, name=name):
                times[name] = _raw_loop(trainer, collator, batch, steps + 2, bf16, baton, i)
        else:
            clock = LockstepClock(baton, i)
            trainer.add_callback(clock)

            def work(trainer=trainer, clock=clock, name=name):
                trainer.train()
                times[name] = clock.steps
        threads.append(threading.Thread(target=work, name=name))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rates = {name: batch / statistics.median(times[name][2:]) for name in VARIANTS}
    rates["precompute_s"] = built["trainer"][0].precompute_s
    rates["precomputed images"] = sum(len(s) for s in built["trainer"][1].streams.values())
    return rates


def eval_rates(arch: str, n: int, bf16: bool, chunk: int = 512) -> dict:
    """``evaluate_sets`` and bare batched forwards over the same images, alternating chunk by chunk (the machine's
    drift falls on both alike); the ratio is the median of the chunks' time ratios."""
    from hf_unlearn import precision
    from hf_unlearn.data import ImageSet
    from hf_unlearn.evaluation import EvalSet, evaluate_sets
    from hf_unlearn.prompts import inference_batch_size

    model = build(arch).eval().to("cuda" if torch.cuda.is_available() else "cpu")
    size = model.config.vision_config.image_size
    images = ImageSet(torch.randn(n, 3, size, size), torch.randint(10, (n,)))

    class Tok:  # random prompts: the throughput does not depend on their words
        def __call__(self, texts, **kw):
            return {"input_ids": torch.randint(1, 400, (len(texts), 12)), "attention_mask": torch.ones(len(texts), 12, dtype=torch.long)}

    precision.set_default(bf16)
    own = inference_batch_size(model.device)  # the batch evaluate_sets uses
    runner = precision.inference_model(model)  # what evaluate_sets runs: under bf16 a bf16 copy with SDPA attention
    bare = [("bare forward", runner, own, runner is model), ("bare forward, batch 256", runner, 256, runner is model)]
    if runner is not model:
        bare.append(("autocast, fp32 weights", model, own, True))  # how evaluation ran before the bf16 copy
    times = {"evaluate_sets": [], **{name: [] for name, *_ in bare}}
    for i in range(0, n, chunk):
        part = images.subset(range(i, min(i + chunk, n)))
        t0 = time.perf_counter()
        evaluate_sets(model, Tok(), [EvalSet("x", part, [f"c{c}" for c in range(10)])])
        times["evaluate_sets"].append(time.perf_counter() - t0)
        for name, net, batch, autocast in bare:
            t0 = time.perf_counter()
            with torch.no_grad(), precision.autocast(model.device) if autocast else contextlib.nullcontext():
                for j in range(0, len(part), batch):
                    net.get_image_features(pixel_values=part.pixel_values[j : j + batch].to(net.device, net.dtype))
                _sync()
            times[name].append(time.perf_counter() - t0)
    rates = {k: n / sum(v) for k, v in times.items()}
    rates["eval ratio"] = statistics.median(b / a for a, b in zip(times["evaluate_sets"], times["bare forward"]))
    return rates


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", default="mini-clip-64", choices=["mini-clip-64", *ARCHS])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--eval_images", type=int, default=2048)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--rounds", type=int, default=3, help="Rounds of every variant, interleaved; each figure is its median.")
    p.add_argument("--only", choices=["train", "eval"], help="Measure one half only.")
    a = p.parse_args()
    torch.manual_seed(0)
    rounds = [(train_rates(a.arch, a.batch, a.steps, a.bf16) if a.only != "eval" else {},
               eval_rates(a.arch, a.eval_images, a.bf16) if a.only != "train" else {}) for _ in range(a.rounds)]
    train, ev = ({k: statistics.median(r[i][k] for r in rounds) for k in rounds[0][i]} for i in (0, 1))
    print(f"{a.arch}, batch {a.batch}, {'bf16' if a.bf16 else 'fp32'}, {torch.get_num_threads()} threads, {a.steps} timed steps, median of {a.rounds} rounds")
    # ratios within a round (minutes apart at most), then their median: the machine's speed drifts between rounds
    ratio = lambda f: statistics.median(f(r) for r in rounds)  # noqa: E731
    if train:
        print_train(train, ratio)
    if ev:
        for k, v in ev.items():
            if k != "eval ratio":
                print(f"  eval  {k:<24} {v:8.1f} img/s")
        print(f"  evaluate_sets / bare forward: {ratio(lambda r: r[1]['eval ratio']):.3f} (median of the chunks' ratios, then of the rounds')")


def print_train(train: dict, ratio) -> None:
    for k in ("raw", "trainer", "no teacher", "live teacher"):
        print(f"  train {k:<12} {train[k]:8.1f} img/s (forget images a step; 4 streams; median step)")
    print(f"  teacher cache: {train['precomputed images']} images embedded once in {train['precompute_s']:.1f} s")
    print(f"  trainer / raw loop: {ratio(lambda r: r[0]['trainer'] / r[0]['raw']):.3f} (median of the rounds' ratios)")
    print(f"  step time with teacher terms / without: {ratio(lambda r: r[0]['no teacher'] / r[0]['trainer']):.3f} (precomputed); "
          f"{ratio(lambda r: r[0]['no teacher'] / r[0]['live teacher']):.3f} (live teacher)")


if __name__ == "__main__":
    main()
