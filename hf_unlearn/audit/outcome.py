"""What the audit concludes, in words: a verdict per attack, the lines a run prints and the model card's section.
Pure functions of the audit's dict: no torch, so the report and the command line read them without loading a model."""
from __future__ import annotations


def survivors_line(s: dict) -> str:
    """One line on FA's survivors: how many, and how many look like the retained siblings rather than the subgroup."""
    n = len(s["recognised"])
    head = f"still recognised under the reported templates: {n} of {s['forget_test_images']} forget test images"
    if not n:
        return head + "."
    rows = ", ".join(str(r["row"]) for r in s["recognised"][:10]) + (", ..." if n > 10 else "")
    verb = "looks" if s["like_siblings"] == 1 else "look"
    return (f"{head} (test rows {rows}); {s['like_siblings']} of them {verb} like the retained siblings (under half of their "
            f"{s['k']} nearest training images of the class are in the subgroup; {s['subgroup_share_mean']:.0%} on average over "
            f"the subgroup's test images).")


def verdicts(results: dict, args) -> dict:
    """Per attack: ``forgotten`` or ``shallow``, and what it was compared with."""
    unlearned, original, reference = results["unlearned"], results["original"], results.get("reference")
    scores = {"phrasing": lambda r: r["phrasing"]["worst_FA"], "relearn_retain_only": lambda r: r["relearn_retain_only"],
              "relearn_retain_plus_forget": lambda r: r["relearn_retain_plus_forget"], "probe": lambda r: r["probe"]}
    thresholds = {"phrasing": args.audit_phrasing_fa, "relearn_retain_only": args.audit_relearn_fa,
                  "relearn_retain_plus_forget": args.audit_relearn_fa, "probe": args.audit_probe_fraction * original["probe"]}
    out = {}
    for attack, score in scores.items():
        bar, against = ((score(reference) + args.audit_margin, "reference + margin") if reference is not None
                        else (thresholds[attack], "threshold"))
        out[attack] = {"verdict": "forgotten" if score(unlearned) <= bar + 1e-12 else "shallow", "score": score(unlearned),
                       "bar": bar, "against": against}
    return out


ATTACK_NAMES = {"phrasing": "worst single phrasing (FA)", "relearn_retain_only": "relearning on retain images (FA)",
                "relearn_retain_plus_forget": "relearning on retain + forget images (FA)", "probe": "linear probe (class accuracy)"}


def card_section(audit: dict) -> str:
    """The model card's "Robustness audit" section."""
    has_ref = "reference" in audit
    head = "| attack | unlearned | original |" + (" reference |" if has_ref else "") + " verdict |"
    rows = [head, "|---" * (4 + has_ref) + "|"]
    for attack, v in audit["verdicts"].items():
        values = [v["score"], _score(audit["original"], attack)] + ([_score(audit["reference"], attack)] if has_ref else [])
        rows.append(f"| {ATTACK_NAMES[attack]} | " + " | ".join(f"{x:.2%}" for x in values) + f" | **{v['verdict']}** (bar {v['bar']:.2%}, {v['against']}) |")
    worst = audit["unlearned"]["phrasing"]
    return ("## Robustness audit\n\n" + "\n".join(rows) + f"\n\nWorst phrasing: \"{worst['worst_phrasing']}\" (mean FA over "
            f"{audit['settings']['phrasings']} phrasings {worst['mean_FA']:.2%}). Relearning: {audit['settings']['relearn_steps']} AdamW "
            f"steps at lr {audit['settings']['relearn_learning_rate']:g}, batch {audit['settings']['relearn_batch_size']}, captions "
            f"\"{audit['settings']['caption']}\"; (b) adds {audit['settings']['relearn_forget_images']} forget images."
            + (f" Each figure is a share of the {_n(audit)} forget test images: one image is {1 / _n(audit):.2%}." if _n(audit) else "")
            + (f" FA's survivors: {survivors_line(audit['survivors'])}" if audit.get("survivors") else "")
            + ("" if has_ref else f"\n\n{NO_REFERENCE}") + "\n")


NO_REFERENCE = ("Without a reference model (`--reference_model`: one trained without the subgroup) the bars are fixed thresholds. A "
                "model that never saw the subgroup can itself exceed them where the subgroup looks like what is kept (a class's "
                "paintings or photos beside its other domains): *shallow* then says the subgroup can be brought back, not that "
                "retraining would have kept it out.")


def verdict_lines(audit: dict) -> list[str]:
    """One line per attack, then the audit's outcome: what a run and ``python -m hf_unlearn.audit`` print."""
    lines = [f"{ATTACK_NAMES[a]:<45} {v['score']:>8.2%}  {v['verdict']} (bar {v['bar']:.2%}, {v['against']})" for a, v in audit["verdicts"].items()]
    if audit.get("survivors"):
        lines.append(survivors_line(audit["survivors"]))
    return [*lines, audit_outcome(audit)]


def audit_outcome(audit: dict, figures: str = "the model card's Robustness audit section") -> str:
    """One line: forgotten under every attack, or which attacks bring the subgroup back (``figures``: where to read more)."""
    shallow = [ATTACK_NAMES[a].split(" (")[0] for a, v in audit["verdicts"].items() if v["verdict"] != "forgotten"]
    n = len(audit["verdicts"])
    if not shallow:
        return f"Robustness audit: forgotten under all {n} attacks."
    return (f"Robustness audit: SHALLOW under {len(shallow)} of {n} attacks ({'; '.join(shallow)}): an attacker can bring the "
            f"subgroup back ({figures}).")


def _n(audit: dict) -> int:
    """How many forget test images every attack's figure is a share of (0 in an audit from before it was recorded)."""
    return (audit.get("survivors") or {}).get("forget_test_images", 0)


def _score(result: dict, attack: str) -> float:
    return result["phrasing"]["worst_FA"] if attack == "phrasing" else result[attack]
