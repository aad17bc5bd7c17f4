"""The attacks of the robustness audit, each on a model it never changes:

- ``phrasing_attack``: zero-shot FA / RA / OA under each single phrasing of a bank no run trains on;
- ``relearn``: a copy fine-tuned with the family's plain contrastive loss on all parameters (an attacker's few steps);
- ``probe_accuracy``: a logistic-regression probe on frozen image embeddings, scored on the forget subgroup;
- ``relative_change``: how far each module's weights moved from the original;
- ``subgroup_neighbours``: whether a forget image looks like its subgroup or like the retained siblings (what FA's
  survivors are).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from .. import family, precision
from ..data import ImageSet
from ..evaluation import EvalSet, embed_images, predict, score_sets

@torch.no_grad()
def phrasing_attack(model, tokenizer, test: EvalSet, bank: list[str], image_embeds: torch.Tensor | None = None) -> dict:
    """FA / RA / OA of ``model`` on ``test`` under each phrasing alone; the worst FA, its phrasing and the mean FA."""
    images = embed_images(model, test.images.pixel_values) if image_embeds is None else image_embeds
    per = {p: score_sets([test], [predict(model, tokenizer, test, (p,), images)]) for p in bank}
    worst = max(per, key=lambda p: per[p]["FA"])
    return {"per_phrasing": per, "worst_phrasing": worst, "worst_FA": per[worst]["FA"],
            "mean_FA": sum(m["FA"] for m in per.values()) / len(per)}


def relearn(model, tokenizer, images: ImageSet, captions: list[str], steps: int = 100, learning_rate: float = 1e-4,
            batch_size: int = 32, seed: int = 0):
    """A copy of ``model`` fine-tuned on (image, caption) pairs with the family's own contrastive loss (CLIP's
    softmax or SigLIP's sigmoid, ``return_loss=True``), every parameter trainable, AdamW, under the run's autocast
    (bf16 where the hardware is fast at it, like the run's own stages). ``model`` is untouched."""
    attacked = copy.deepcopy(model).train().requires_grad_(True)
    device = next(attacked.parameters()).device
    optimizer = torch.optim.AdamW(attacked.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < min(batch_size, len(images)):
            order = torch.cat([order, torch.randperm(len(images), generator=generator)])
        idx, order = order[:batch_size], order[batch_size:]
        tokens = family.tokenize(attacked, tokenizer, [captions[i] for i in idx.tolist()])
        with precision.autocast(device):
            out = attacked(pixel_values=images.pixel_values[idx].to(device), **{k: v.to(device) for k, v in tokens.items()}, return_loss=True)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
    return attacked.eval().requires_grad_(False)


def _fit_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int, steps: int = 300, weight_decay: float = 1e-4, seed: int = 0) -> torch.nn.Linear:
    """Multinomial logistic regression, full batch, L-BFGS (standardised inputs)."""
    torch.manual_seed(seed)
    probe = torch.nn.Linear(x.shape[1], n_classes)
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(x), y) + weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe


def probe_accuracy(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, n_classes: int) -> float:
    """Class accuracy on (``x_test``, ``y_test``) of a linear probe fitted on frozen embeddings (``x_train``,
    ``y_train``): what is still linearly decodable from the embedding, whatever the text says."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    probe = _fit_probe((x_train - mean) / std, y_train, n_classes)
    with torch.no_grad():
        pred = probe((x_test - mean) / std).argmax(-1)
    return float((pred == y_test).float().mean()) if len(pred) else float("nan")


@torch.no_grad()
def relative_change(model, original, modules: list[str] | None = None) -> dict[str, float]:
    """||W - W_original|| / ||W_original|| per module (the linear layers of the encoders unless ``modules`` names them)."""
    ours, theirs = dict(model.named_modules()), dict(original.named_modules())
    names = modules or [n for n, m in ours.items() if isinstance(m, torch.nn.Linear) and ".encoder.layers." in n]
    out = {}
    for name in names:
        w, w0 = ours[name].weight.float(), theirs[name].weight.float().to(ours[name].weight.device)
        out[name] = float((w - w0).norm() / w0.norm().clamp_min(1e-12))
    return out


@torch.no_grad()
def subgroup_neighbours(queries: torch.Tensor, labels: torch.Tensor, train: torch.Tensor, train_labels: torch.Tensor,
                        in_subgroup: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Per query embedding: the share of its ``k`` nearest training embeddings of the same class (cosine; unit-norm
    inputs) that are in the subgroup (``in_subgroup``, a mask over the training rows); NaN where the class has no
    training row. A forget image with a low share sits among the retained siblings of its class, where a model that
    never saw the subgroup would still place it."""
    out = torch.full((len(queries),), float("nan"))
    for c in labels.unique():
        rows, q = (train_labels == c).nonzero().flatten(), (labels == c).nonzero().flatten()
        if len(rows):
            nearest = (queries[q].float() @ train[rows].float().T).topk(min(k, len(rows)), dim=1).indices
            out[q] = in_subgroup[rows][nearest].float().mean(1)
    return out
