"""Relative Fisher layer selection: which modules carry the forget subgroup more than its siblings.

score(m) = mean(grad^2 of forget-pair similarity wrt m's weights over forget samples)
         / max(mean(grad^2 of the same similarity over retain samples), floor)
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from . import precision
from .checks import ModelError, split_list
from .config import LINEAR_KINDS, SCOPES
from .losses import forget_similarity_loss
from .progress import progress
from .prompts import encode_images, features

_BLOCK = re.compile(r"^(\w+)_model\.encoder\.layers\.(\d+)\.")


def candidate_modules(model: torch.nn.Module, scope: str = "vision", kinds: tuple[str, ...] | list[str] = LINEAR_KINDS,
                      first_block: int = 0) -> list[str]:
    """Linear layers inside the encoder blocks of the chosen tower(s), of the given kinds, in blocks ``first_block``
    and above: the units LoRA can adapt."""
    if scope not in SCOPES:
        raise ValueError(f"unknown selection scope {scope!r}; choices: {sorted(SCOPES)}")
    pattern = re.compile(SCOPES[scope])
    block = {n: int(_BLOCK.match(n)[2]) for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and pattern.match(n) and n.rsplit(".", 1)[-1] in kinds}
    kept = [n for n, b in block.items() if b >= first_block]
    if block and not kept:
        blocks = 1 + max(block.values())
        towers = "vision and text encoders have" if scope == "both" else f"{scope} encoder has"
        raise ModelError(f"--first_block {first_block}: the model's {towers} blocks 0-{blocks - 1}; "
                         f"choose at most {blocks - 1}")
    return kept


def weight_rms(model: torch.nn.Module, modules: list[str]) -> float:
    """Root mean square of the named modules' weight matrices, together: the size a rate relative to them scales by."""
    named = dict(model.named_modules())
    weights = [named[n].weight.detach().float() for n in modules]
    return float(torch.sqrt(sum(w.pow(2).sum() for w in weights) / sum(w.numel() for w in weights)))


def _mean_sq_grads(model, modules: dict, pixel_values, labels, class_embeds_fn, batch_size: int, desc: str = "Fisher") -> dict[str, float]:
    totals = {name: 0.0 for name in modules}
    n = 0
    for i in progress(range(0, len(labels), batch_size), desc=desc):
        model.zero_grad(set_to_none=True)
        with precision.autocast(pixel_values.device):
            image = encode_images(model, pixel_values[i : i + batch_size])
        forget_similarity_loss(image, class_embeds_fn(), labels[i : i + batch_size]).backward()
        for name, module in modules.items():
            g = module.weight.grad
            totals[name] += 0.0 if g is None else float(g.pow(2).mean())
        n += 1
    model.zero_grad(set_to_none=True)
    return {k: v / max(n, 1) for k, v in totals.items()}


def relative_fisher_scores(
    model,
    class_embeds_fn,
    forget_pixels: torch.Tensor,
    forget_labels: torch.Tensor,
    retain_pixels: torch.Tensor,
    retain_labels: torch.Tensor,
    modules: list[str],
    batch_size: int = 16,
    floor: float = 1e-12,
) -> list[dict]:
    """Per-module relative Fisher scores, sorted best first (ties broken by name, so the order is deterministic).

    ``class_embeds_fn()`` returns the class prompt embeddings; it may run the text tower (so text modules get
    gradients) or return a fixed tensor. ``batch_size=1`` gives the true empirical Fisher (per-sample grads).
    """
    named = dict(model.named_modules())
    unknown = [m for m in modules if m not in named]
    if unknown:
        raise ValueError(f"modules not in the model: {unknown[:5]}")
    chosen = {m: named[m] for m in modules}
    was_training, flags = model.training, {n: p.requires_grad for n, p in model.named_parameters()}
    model.eval()  # dropout off: scores must not depend on noise
    model.requires_grad_(False)
    for module in chosen.values():
        module.weight.requires_grad_(True)
    try:
        f = _mean_sq_grads(model, chosen, forget_pixels, forget_labels, class_embeds_fn, batch_size, "Fisher scores (forget)")
        r = _mean_sq_grads(model, chosen, retain_pixels, retain_labels, class_embeds_fn, batch_size, "Fisher scores (retain)")
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
        model.train(was_training)
    rows = [{"module": m, "score": f[m] / max(r[m], floor), "fisher_forget": f[m], "fisher_retain": r[m]} for m in modules]
    return sorted(rows, key=lambda row: (-row["score"], row["module"]))


def select_top(ranking: list[dict], top_k: int | None = None, top_fraction: float | None = None, fill_to: int = 0) -> list[str]:
    """The first ``top_k`` modules (or ``top_fraction`` of them) of a ranking; modules with zero score never.

    ``fill_to``: then the next modules by score, up to ``fill_to`` in all, but only in blocks at or above the earliest
    block the first ``top_k`` reach in each tower. The backward pass already runs down to that block, so the extra
    adapters spread the update for the cost of the adapters alone, not a deeper backward pass."""
    usable = [row["module"] for row in ranking if row["score"] > 0]
    if top_k is None:
        top_k = max(1, round(len(ranking) * (top_fraction if top_fraction is not None else 1.0)))
    chosen = usable[:top_k]
    earliest: dict[str, int] = {}
    for m in chosen:
        if (hit := _BLOCK.match(m)):
            earliest[hit[1]] = min(earliest.get(hit[1], int(hit[2])), int(hit[2]))
    for m in usable[top_k:]:
        if len(chosen) >= fill_to:
            break
        hit = _BLOCK.match(m)
        if hit and hit[1] in earliest and int(hit[2]) >= earliest[hit[1]]:
            chosen.append(m)
    return chosen


def text_class_bank(model, prompt_tokens: dict, n_classes: int) -> torch.Tensor:
    """The class bank from the model's own text tower, with grad (class-major prompts, averaged per class)."""
    with precision.autocast(next(model.parameters()).device):
        text = F.normalize(features(model.get_text_features(**prompt_tokens)).float(), dim=-1)
    return F.normalize(text.view(n_classes, -1, text.shape[-1]).mean(1), dim=-1)


def select_modules(args, model, groups, class_embeds, prompt_tokens: dict) -> tuple[list[str], list[dict]]:
    """The modules the method tunes and the ranking behind them (every candidate under --no_layer_selection). Text
    modules are scored through the text tower (the bank is recomputed with grad); vision ones against the fixed bank."""
    candidates = candidate_modules(model, args.selection_scope, split_list(args.target_modules), args.first_block)
    if args.no_layer_selection:
        return candidates, []
    gen = torch.Generator().manual_seed(args.seed)
    forget, retain = groups.train["forget"], groups.train["retain"]
    fi = torch.randperm(len(forget), generator=gen)[: args.fisher_samples]
    ri = torch.randperm(len(retain), generator=gen)[: args.fisher_samples]
    bank = (lambda: class_embeds) if args.selection_scope == "vision" else (lambda: text_class_bank(model, prompt_tokens, len(class_embeds)))
    ranking = relative_fisher_scores(model, bank, forget.pixel_values[fi], forget.labels[fi],
                                     retain.pixel_values[ri], retain.labels[ri], candidates)
    return select_top(ranking, top_k=args.top_k_modules, fill_to=args.fill_modules), ranking
