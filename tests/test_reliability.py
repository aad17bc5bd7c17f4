"""Every bad input in docs/RELIABILITY.md: one clear line, the right exit code, nothing left on disk.

``CASES`` is the catalogue; ``benchmarks/reliability.py`` runs each one as a user would (a subprocess of the recipe)
and writes the table with its exit code, seconds to failure and message.
"""
import errno
import importlib
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Callable

import datasets
import pytest
import torch
from safetensors.torch import load_file

from hf_unlearn.cli import console, one_line_errors

FORGET = "label=circle,domain=sketch"


@dataclass
class Case:
    id: str
    what: str  # the bad input, as the table names it
    flags: list[str]  # added to the base command (later flags win), with {model} {data} {tmp} {out} filled in
    code: int
    message: str  # a regex the printed error must match
    setup: Callable | None = None  # setup(tmp, world) -> extra placeholders
    base: bool = True  # False: the flags are the whole command
    marks: list = field(default_factory=list)
    tool: str = "recipe"  # or the module of a command run on its own: hf_unlearn.audit, hf_unlearn.eval_cli


# ---- set-ups that build a bad input -----------------------------------------------------------------------------

def _copy_data(tmp, world, name):
    dst = os.path.join(tmp, name)
    shutil.copytree(world[1], dst)
    return dst


def model_copy(tmp, world):
    """A copy of the model, so that a regression of the check cannot delete the shared world's."""
    dst = os.path.join(tmp, "my-model")
    shutil.copytree(world[0], dst)
    return {"bad": dst}


def data_copy(tmp, world):
    return {"bad": _copy_data(tmp, world, "my-data")}


def _ds(world):
    return datasets.load_dataset("parquet", data_files={"train": os.path.join(world[1], "train.parquet"),
                                                         "test": os.path.join(world[1], "test.parquet")})


def corrupt_image(tmp, world):
    """The first sketch of a circle replaced by bytes that are no image (so the forget group decodes it)."""
    dsd = _ds(world)
    row = next(i for i, (lab, d) in enumerate(zip(dsd["train"]["label"], dsd["train"]["domain"])) if lab == 0 and d == 3)
    train = dsd["train"].cast_column("image", datasets.Image(decode=False)).map(
        lambda ex, i: {"image": {"bytes": b"not a png", "path": "sketch/circle/5.png"}} if i == row else {}, with_indices=True)
    out = os.path.join(tmp, "corrupt")
    datasets.DatasetDict({"train": train, "test": dsd["test"]}).save_to_disk(out)
    return {"bad": out, "row": str(row)}


def unreadable_parquet(tmp, world):
    out = os.path.join(tmp, "garbage")
    os.makedirs(out)
    for split in ("train", "test"):
        with open(os.path.join(out, f"{split}.parquet"), "wb") as f:
            f.write(b"PAR1 this is not parquet")
    return {"bad": out}


def no_parquet(tmp, world):
    out = os.path.join(tmp, "empty")
    os.makedirs(out)
    return {"bad": out}


def int_class_column(tmp, world):
    dsd = _ds(world)
    dsd = dsd.cast_column("label", datasets.Value("int64"))
    out = os.path.join(tmp, "intlabels")
    dsd.save_to_disk(out)
    return {"bad": out}


def train_only(tmp, world):
    dsd = _ds(world)
    out = os.path.join(tmp, "trainonly")
    datasets.DatasetDict({"train": dsd["train"]}).save_to_disk(out)
    return {"bad": out}


def one_forget_row(tmp, world):
    dsd = _ds(world)
    keep = []
    seen = 0
    for i, (lab, d) in enumerate(zip(dsd["train"]["label"], dsd["train"]["domain"])):
        if lab == 0 and d == 3:
            seen += 1
            if seen > 1:
                continue
        keep.append(i)
    out = os.path.join(tmp, "onerow")
    datasets.DatasetDict({"train": dsd["train"].select(keep), "test": dsd["test"]}).save_to_disk(out)
    return {"bad": out}


def bert_model(tmp, world):
    from transformers import BertConfig, BertModel

    out = os.path.join(tmp, "bert")
    BertModel(BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(out)
    return {"bad": out}


def pickled_weights(tmp, world):
    out = os.path.join(tmp, "pickled")
    shutil.copytree(world[0], out)
    torch.save(load_file(os.path.join(out, "model.safetensors")), os.path.join(out, "pytorch_model.bin"))
    os.remove(os.path.join(out, "model.safetensors"))
    return {"bad": out}


def siglip_with_clip_processor(tmp, world):
    from transformers import SiglipConfig, SiglipModel

    out = os.path.join(tmp, "siglip")
    SiglipModel(SiglipConfig(text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
                             vision_config=dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                num_attention_heads=2))).save_pretrained(out)
    for name in os.listdir(world[0]):
        if name not in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(world[0], name), out)
    return {"bad": out}


def output_is_a_file(tmp, world):
    path = os.path.join(tmp, "a_file")
    with open(path, "w") as f:
        f.write("keep me")
    return {"bad": path}


def full_output(tmp, world):
    path = os.path.join(tmp, "full")
    os.makedirs(path)
    with open(os.path.join(path, "model.safetensors"), "w") as f:
        f.write("an earlier result")
    return {"bad": path}


def bad_bank(tmp, world):
    path = os.path.join(tmp, "phrasings.txt")
    with open(path, "w") as f:
        f.write("a photo of a {}.\na phrasing without its class\n")
    return {"bad": path}


def bad_yaml(text):
    def setup(tmp, world):
        path = os.path.join(tmp, "recipe.yaml")
        with open(path, "w") as f:
            f.write(text)
        return {"bad": path}
    return setup


# ---- the catalogue ----------------------------------------------------------------------------------------------

CASES = [
    # settings out of range, every flag family
    Case("lr-negative", "`--forget_learning_rate -1`", ["--forget_learning_rate", "-1"], 2, r"--forget_learning_rate -1\.0: must be > 0"),
    Case("lr-zero", "`--forget_learning_rate 0 --remind_learning_rate 0`", ["--forget_learning_rate", "0", "--remind_learning_rate", "0"], 2, r"learning_rate 0\.0: must be > 0"),
    Case("lr-text", "`--remind_learning_rate fast`", ["--remind_learning_rate", "fast"], 2, r"argument --remind_learning_rate.*invalid float value: 'fast'"),
    Case("epochs-zero", "`--forget_epochs 0`", ["--forget_epochs", "0"], 2, r"--forget_epochs 0\.0: must be > 0"),
    Case("epochs-negative", "`--remind_epochs -1`", ["--remind_epochs", "-1"], 2, r"--remind_epochs -1\.0: must be > 0"),
    Case("batch-zero", "`--batch_size 0`", ["--batch_size", "0"], 2, r"--batch_size 0: must be > 0"),
    Case("batch-float", "`--batch_size 2.5`", ["--batch_size", "2.5"], 2, r"argument --batch_size.*invalid int value: '2\.5'"),
    Case("top-k-zero", "`--top_k_modules 0`", ["--top_k_modules", "0"], 2, r"--top_k_modules 0: must be > 0"),
    Case("fisher-negative", "`--fisher_samples -3`", ["--fisher_samples", "-3"], 2, r"--fisher_samples -3: must be > 0"),
    Case("target-modules", "`--target_modules q,fc1`", ["--target_modules", "q,fc1"], 2,
         r"--target_modules 'q,fc1': must be comma-separated names from \['q_proj', 'k_proj', 'v_proj', 'out_proj', 'fc1', 'fc2'\]"),
    Case("alpha-tolerance-above-one", "`--alpha_tolerance 2`", ["--alpha_tolerance", "2"], 2, r"--alpha_tolerance 2(\.0)?: must be in \[0, 1\]"),
    Case("retention-bars-unknown-key", "`--retention_bars FA=0.5`", ["--retention_bars", "FA=0.5"], 2,
         r"--retention_bars 'FA=0.5': 'FA=0.5': the key must be one of RA, OA, ZS"),
    Case("first-block-negative", "`--first_block -1`", ["--first_block", "-1"], 2, r"--first_block -1: must be >= 0"),
    Case("first-block-past-the-last", "`--first_block 9` on a 3-block vision encoder", ["--first_block", "9"], 2,
         r"--first_block 9: the model's vision encoder has blocks 0-2; choose at most 2"),
    Case("lora-rank-zero", "`--lora_r 0`", ["--lora_r", "0"], 2, r"--lora_r 0: must be > 0"),
    Case("lora-dropout", "`--lora_dropout 1.5`", ["--lora_dropout", "1.5"], 2, r"--lora_dropout 1\.5: must be in \[0, 1\)"),
    Case("calibration-fraction", "`--calibration_fraction 1.5`", ["--calibration_fraction", "1.5"], 2, r"--calibration_fraction 1\.5: must be in \(0, 1\)"),
    Case("max-forget-zero", "`--max_forget 0`", ["--max_forget", "0"], 2, r"--max_forget 0: must be >= 1"),
    Case("max-calibration-zero", "`--max_calibration 0`", ["--max_calibration", "0"], 2, r"--max_calibration 0: must be > 0"),
    Case("ema-one", "`--ema_decay 1`", ["--ema_decay", "1"], 2, r"--ema_decay 1\.0: must be in \[0, 1\)"),
    Case("kd-temperature", "`--kd_temperature 0`", ["--kd_temperature", "0"], 2, r"--kd_temperature 0\.0: must be > 0"),
    Case("kd-weight", "`--retain_kd_weight -1`", ["--retain_kd_weight", "-1"], 2, r"--retain_kd_weight -1\.0: must be >= 0"),
    Case("guard-weight", "`--forget_guard_weight -2`", ["--forget_guard_weight", "-2"], 2, r"--forget_guard_weight -2\.0: must be >= 0"),
    Case("forget-loss", "`--forget_loss nope`", ["--forget_loss", "nope"], 2, r"unknown forget_loss 'nope' \(--forget_loss\); choices: similarity, margin, teacher_others"),
    Case("scope", "`--selection_scope audio`", ["--selection_scope", "audio"], 2, r"unknown selection_scope 'audio'.*choices: vision, text, both"),
    Case("precision", "`--precision fp8`", ["--precision", "fp8"], 2, r"unknown precision 'fp8'.*choices: auto, bf16, fp32"),
    Case("method", "`--method nope`", ["--method", "nope"], 2, r"unknown method 'nope'.*choices: forget_remind_restore, ga, neggrad_plus"),
    Case("search-fraction", "`--hp_search_fraction 0`", ["--hp_search_fraction", "0"], 2, r"--hp_search_fraction 0\.0: must be in \(0, 1\]"),
    Case("alpha-text", "`--alpha_grid 1,x`", ["--alpha_grid", "1,x"], 2, r"--alpha_grid '1,x': must be comma-separated numbers in \[0, 1\]"),
    Case("alpha-range", "`--alpha_grid 1.5`", ["--alpha_grid", "1.5"], 2, r"--alpha_grid '1\.5': must be comma-separated numbers in \[0, 1\]"),
    Case("fa-target", "`--fa_target 2`", ["--fa_target", "2"], 2, r"--fa_target 2\.0: must be in \[0, 1\]"),
    Case("save-steps", "`--save_steps -1`", ["--save_steps", "-1"], 2, r"--save_steps -1: must be >= 0"),
    Case("scrub-fraction", "`--scrub_max_fraction 2`", ["--scrub_max_fraction", "2"], 2, r"--scrub_max_fraction 2\.0: must be in \[0, 1\]"),
    Case("saliency-fraction", "`--saliency_fraction 0`", ["--saliency_fraction", "0"], 2, r"--saliency_fraction 0\.0: must be in \(0, 1\]"),
    Case("attribute", "`--attributes texture`", ["--attributes", "texture"], 2, r"--attributes 'texture': must be names from \['color'\]"),
    Case("bool", "`--no_lora maybe`", ["--no_lora", "maybe"], 2, r"argument --no_lora.*Truthy value expected"),
    Case("unknown-flag", "`--forgett_epochs 2` (a typo)", ["--forgett_epochs", "2"], 2, r"unrecognized arguments: --forgett_epochs 2"),
    # YAML recipes
    Case("yaml-list", "YAML `forget_epochs: [1, 2]`", ["--config", "{bad}"], 2, r"forget_epochs: expected a single value, got \[1, 2\]", bad_yaml("forget_epochs: [1, 2]\n")),
    Case("yaml-unknown", "YAML key `forgett: ...`", ["--config", "{bad}"], 2, r"unknown keys \['forgett'\]", bad_yaml("forgett: label=dog\n")),
    Case("yaml-section", "YAML `forget_stage: {remind_epochs: 1}`", ["--config", "{bad}"], 2, r"unknown keys \['remind_epochs'\] in section 'forget_stage'", bad_yaml("forget_stage:\n  remind_epochs: 1\n")),
    Case("yaml-not-mapping", "a YAML list instead of a mapping", ["--config", "{bad}"], 2, r"expected a mapping of settings, got list", bad_yaml("- a\n- b\n")),
    Case("yaml-missing", "`--config missing.yaml`", ["--config", "{tmp}/missing.yaml"], 2, r"--config '.*missing\.yaml': no such recipe file"),
    # subgroup specs
    Case("forget-empty", '`--forget ""` passed explicitly', ["--forget", ""], 2, r"--forget '': must be a spec"),
    Case("retain-empty", '`--retain ""` passed explicitly', ["--retain", ""], 2, r"--retain '': must be a spec"),
    Case("spec-double-equals", "`--forget label==dog`", ["--forget", "label==dog"], 2, r"malformed condition 'label==dog'"),
    Case("spec-index", "`--forget label=99`", ["--forget", "label=99"], 2, r"unknown value '99' for column 'label'; choices: \[.*\] \(or their indices 0-4\)"),
    Case("spec-column", "`--forget colour=red`", ["--forget", "colour=red"], 2, r"unknown column 'colour'.*columns: \["),
    Case("spec-value", "`--forget label=circle,domain=watercolour`", ["--forget", "label=circle,domain=watercolour"], 2, r"unknown value 'watercolour'.*choices"),
    Case("spec-overlap", "forget and retain overlap", ["--retain", "label=circle"], 2, r"overlap on \d+ rows"),
    Case("spec-whole-class", "`--forget label=circle` (no retain rows left)", ["--forget", "label=circle"], 2, r"retain set is empty.*pass --retain"),
    Case("class-column", "`--class_column kind`", ["--class_column", "kind"], 2, r"unknown class column 'kind'; columns: \["),
    Case("train-split", "`--train_split training`", ["--train_split", "training"], 2, r"has no 'training' split; splits: \['test', 'train'\]"),
    Case("eval-split", "`--eval_split validation`", ["--eval_split", "validation"], 2, r"has no 'validation' split"),
    Case("one-forget-row", "a forget subgroup of one row", ["--dataset", "{bad}"], 2, r"matches 1 row\(s\) of 'train'; at least 2 are needed", one_forget_row),
    # paths, models, data
    Case("model-missing", "`--model_name_or_path ./typo`", ["--model_name_or_path", "./typo"], 2, r"model path './typo' does not exist"),
    Case("dataset-missing", "`--dataset ./typo`", ["--dataset", "./typo"], 2, r"dataset path './typo' does not exist"),
    Case("zeroshot-missing", "`--zeroshot_datasets ./typo`", ["--zeroshot_datasets", "./typo"], 2, r"dataset path './typo' does not exist"),
    Case("proxy-dataset-missing", "`--proxy_dataset ./typo`", ["--proxy_dataset", "./typo"], 2, r"dataset path './typo' does not exist"),
    Case("proxy-dataset-held-out", "`--proxy_dataset` that is also a zero-shot set", ["--proxy_dataset", "{bad}", "--zeroshot_datasets", "{bad}"], 2,
         r"--proxy_dataset '.*' is also in --zeroshot_datasets", data_copy),
    Case("reference-missing", "`--reference_model ./typo` (found before any stage, not at the audit)", ["--reference_model", "./typo"], 2,
         r"model path './typo' does not exist"),
    Case("deep-without-audit", "`--require_deep_forgetting --no_audit`", ["--require_deep_forgetting", "--no_audit"], 2,
         r"--require_deep_forgetting True: must be used without --no_audit"),
    Case("phrasings-missing", "`--audit_phrasings ./typo.txt`", ["--audit_phrasings", "./typo.txt"], 2,
         r"--audit_phrasings './typo\.txt': must be an existing text file"),
    Case("phrasings-malformed", "an audit phrasing without `{}`", ["--audit_phrasings", "{bad}"], 2,
         r"each phrasing needs exactly one '\{{\}}'.*a phrasing without its class", bad_bank),
    Case("zeroshot-is-dataset", "the training dataset as a zero-shot set", ["--zeroshot_datasets", "{data}"], 2,
         r"--zeroshot_datasets '.*' is the --dataset itself: its held-out split holds the forget subgroup"),
    Case("model-is-data", "a dataset folder as `--model_name_or_path`", ["--model_name_or_path", "{data}"], 2, r"cannot load a model config from"),
    Case("model-hub-unreachable", "a Hub id while offline (`HF_HUB_OFFLINE=1`, not in the local Hub cache)",
         ["--model_name_or_path", "hf-unlearn-tests/no-such-clip"], 2,
         r"cannot load a model config from 'hf-unlearn-tests/no-such-clip': .*Check your internet connection"),
    Case("model-not-clip", "a BERT checkpoint", ["--model_name_or_path", "{bad}"], 2, r"is a 'bert' model, not a CLIP dual encoder", bert_model),
    Case("model-pickled", "a checkpoint with pickled weights only", ["--model_name_or_path", "{bad}"], 2, r"cannot load safetensors weights.*pickled weights are never loaded", pickled_weights),
    Case("processor-mismatch", "a SigLIP model with a CLIP processor", ["--model_name_or_path", "{bad}"], 2, r"is a 'siglip' model but its processor is a CLIPProcessor", siglip_with_clip_processor),
    Case("corrupt-image", "a corrupt image in the forget subgroup", ["--dataset", "{bad}"], 2, r"corrupt image at row {row} of 'train' \(.*5\.png\)", corrupt_image),
    Case("unreadable-parquet", "an unreadable Parquet file", ["--dataset", "{bad}"], 2, r"cannot read dataset '.*garbage'", unreadable_parquet),
    Case("no-parquet", "a dataset folder without data", ["--dataset", "{bad}"], 2, r"no \*\.parquet files or dataset_dict\.json", no_parquet),
    Case("no-classlabel", "a class column of plain integers", ["--dataset", "{bad}"], 2, r"class column 'label' must be a ClassLabel or string column", int_class_column),
    Case("zeroshot-no-split", "a zero-shot dataset without a held-out split", ["--zeroshot_datasets", "{bad}"], 2, r"has no held-out split \(tried 'test', 'validation'\); splits: \['train'\]", train_only),
    # the output folder
    Case("output-file", "`--output_dir` names an existing file", ["--output_dir", "{bad}", "--overwrite_output_dir"], 2, r"--output_dir '.*a_file' is a file, not a folder", output_is_a_file),
    Case("output-in-file", "`--output_dir` inside a file", ["--output_dir", "{bad}/run"], 2, r"is inside '.*a_file', which is a file", output_is_a_file),
    Case("output-read-only", "a read-only output folder", ["--output_dir", "/sys/hf_unlearn_run"], 2, r"cannot write in '/sys'"),
    Case("output-is-model", "`--output_dir` is the model folder, with `--overwrite_output_dir`",
         ["--model_name_or_path", "{bad}", "--output_dir", "{bad}", "--overwrite_output_dir"], 2,
         r"--output_dir '.*my-model' is the --model_name_or_path folder .*would replace what the run reads", model_copy),
    Case("output-holds-data", "`--output_dir` holds the dataset, with `--overwrite_output_dir`",
         ["--dataset", "{bad}", "--output_dir", "{tmp}", "--overwrite_output_dir"], 2,
         r"--output_dir '.*' holds the --dataset folder '.*my-data'", data_copy),
    Case("output-full", "an output folder holding a result", ["--output_dir", "{bad}"], 2, r"already holds a result; pass --overwrite_output_dir", full_output),
]

AUDIT, EVALUATE = "hf_unlearn.audit", "hf_unlearn.eval_cli"

# The audit and the evaluator run on their own (base: --model {model} --original {model} --dataset {data} --forget ...):
# the recipe's cases that apply to them too, and their own.
# what the audit and the evaluator are called with ({model} and {data}: the tiny world's folders)
TOOL_ARGS = ["--model", "{model}", "--original", "{model}", "--dataset", "{data}", "--forget", FORGET]


def tool_args(world) -> list[str]:
    return [a.format(model=world[0], data=world[1]) for a in TOOL_ARGS]


_SHARED = {"precision", "dataset-missing", "spec-value", "spec-whole-class", "zeroshot-is-dataset"}
_AUDIT_ONLY = {"reference-missing", "phrasings-missing", "phrasings-malformed"}
_EVALUATE_ONLY = {"retention-bars-unknown-key"}
TOOL_CASES = [
    Case(f"{tool}-{c.id}", f"`python -m {tool}` {c.what}", c.flags, c.code, c.message, tool=tool)
    for tool in (AUDIT, EVALUATE)
    for c in [c for c in CASES if c.id in _SHARED] + [
        Case("threads", "`--cpu_threads 0`", ["--cpu_threads", "0"], 2, r"--cpu_threads 0: must be >= 1, or left out for every core"),
        Case("recipe-flag", "`--forget_learning_rate 1e-3` (a recipe's flag)", ["--forget_learning_rate", "1e-3"], 2,
             r"unrecognized arguments: --forget_learning_rate 1e-3"),
        Case("model-missing", "`--model ./typo`", ["--model", "./typo"], 2, r"model path './typo' does not exist"),
        Case("original-missing", "`--original ./typo`", ["--original", "./typo"], 2, r"model path './typo' does not exist"),
        Case("original-hub-unreachable", "`--original` a Hub id while offline", ["--original", "hf-unlearn-tests/no-such-clip"], 2,
             r"cannot load a model config from 'hf-unlearn-tests/no-such-clip': .*Check your internet connection"),
        Case("json-folder-missing", "`--json ./nowhere/figures.json`", ["--json", "./nowhere/figures.json"], 2,
             r"--json './nowhere/figures\.json': must be a file path in an existing folder"),
    ]
] + [
    *[Case(f"audit-{c.id}", f"`python -m {AUDIT}` {c.what}", c.flags, c.code, c.message, c.setup, tool=AUDIT) for c in CASES if c.id in _AUDIT_ONLY],
    *[Case(f"evaluate-{c.id}", f"`python -m {EVALUATE}` {c.what}", c.flags, c.code, c.message, c.setup, tool=EVALUATE) for c in CASES if c.id in _EVALUATE_ONLY],
    Case("audit-relearn-steps", f"`python -m {AUDIT}` `--audit_relearn_steps 0`", ["--audit_relearn_steps", "0"], 2,
         r"--audit_relearn_steps 0: must be > 0", tool=AUDIT),
    Case("evaluate-no-forget", f"`python -m {EVALUATE}` without `--forget`", TOOL_ARGS[:-2], 2,
         r"no forget spec; pass --forget", base=False, tool=EVALUATE),
]


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory):
    return tmp_path_factory.mktemp("reliability")


def raising(error):
    """A stand-in that raises ``error``, whatever it is called with."""
    def stand_in(*a, **k):
        raise error
    return stand_in


def command(case: Case, world, tmp: str, extra: dict) -> list[str]:
    values = {"model": world[0], "data": world[1], "tmp": tmp, "out": os.path.join(tmp, "out"), **extra}
    base = (["--model_name_or_path", "{model}", "--dataset", "{data}", "--forget", FORGET, "--output_dir", "{out}"] if case.tool == "recipe"
            else TOOL_ARGS)
    base = base if case.base else []
    return [a.format(**values) for a in base + case.flags]


PROGRESS = re.compile(r"\d+%\||it/s\]|s/it\]|examples/s\]|ba/s\]|\x1b\[A")


def messages(err: str) -> list[str]:
    """What a user reads on stderr once progress bars are set aside."""
    return [line for line in err.replace("\r", "\n").splitlines() if line.strip() and not PROGRESS.search(line)]


def _snapshot(tmp):
    """Every path below ``tmp`` but the datasets library's own cache files next to a saved dataset."""
    return sorted(os.path.relpath(os.path.join(d, n), tmp) for d, dirs, files in os.walk(tmp) for n in dirs + files
                  if not n.startswith("cache-") and n != "state.json")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_gets_one_clear_line(case, world, tmp_path, capsys):
    tmp = str(tmp_path)
    extra = case.setup(tmp, world) if case.setup else {}
    before = _snapshot(tmp)
    with pytest.raises(SystemExit) as exit_info:
        console(command(case, world, tmp, extra))
    err = capsys.readouterr().err
    assert exit_info.value.code == case.code, err
    assert "Traceback" not in err
    lines = messages(err)
    message = case.message.format(**extra)
    if lines[-1].startswith("hf_unlearn: error:"):
        assert len(lines) == 1, lines
    else:  # argparse: its usage line, then one error line
        assert lines[-1].startswith("forget_remind_restore.py: error:") or ": error:" in lines[-1], err
    assert re.search(message, lines[-1]), (message, lines[-1])
    assert _snapshot(tmp) == before  # nothing left on disk
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", TOOL_CASES, ids=lambda c: c.id)
def test_the_audit_and_the_evaluator_end_a_bad_input_in_one_line(case, world, tmp_path, capsys):
    tool = importlib.import_module(case.tool if case.tool == EVALUATE else f"{case.tool}.__main__")
    extra = case.setup(str(tmp_path), world) if case.setup else {}
    before = _snapshot(str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        one_line_errors(tool.main, command(case, world, str(tmp_path), extra))
    err = capsys.readouterr().err
    assert exit_info.value.code == case.code and "Traceback" not in err, err
    lines = messages(err)
    if lines[-1].startswith("hf_unlearn: error:"):
        assert len(lines) == 1, lines
    else:  # argparse: its usage line, then one error line
        assert ": error: unrecognized arguments" in lines[-1], lines
    assert re.search(case.message.format(**extra), lines[-1]), (case.message, lines[-1])
    assert _snapshot(str(tmp_path)) == before


@pytest.mark.parametrize("stage", ["data", "forget", "remind", "restore"])
def test_ctrl_c_in_each_stage_says_how_to_resume(stage, world, tmp_path, capsys, monkeypatch):
    from hf_unlearn import groups, method, trainers

    target = {"data": (groups, "preprocess"), "forget": (trainers.ForgetTrainer, "training_step"),
              "remind": (trainers.RemindTrainer, "training_step"), "restore": (method, "search_alpha")}[stage]
    monkeypatch.setattr(*target, raising(KeyboardInterrupt))
    out = tmp_path / "run"
    from .helpers import base_args

    with pytest.raises(SystemExit) as exit_info:
        console(base_args(world, out))
    assert exit_info.value.code == 130
    err = messages(capsys.readouterr().err)
    assert err[-1].startswith("hf_unlearn: interrupted."), err[-3:]
    assert not out.exists()  # nothing published
    if stage != "data":
        assert (tmp_path / "run.incomplete" / "stages").is_dir()  # what finished is kept for the rerun


def test_ctrl_c_that_a_library_turns_into_its_own_error_is_still_an_interruption(world, tmp_path, capsys, monkeypatch):
    """safetensors' reader, interrupted, raises "ValueError: could not determine the shape of object type
    'torch.storage.UntypedStorage'" (seen in the restore's soup): it must end as Ctrl-C does, and the same error
    without a Ctrl-C must still surface."""
    import signal

    from hf_unlearn import method

    from .helpers import base_args

    def reader(interrupt: bool):
        def soup(*a, **k):
            try:
                if interrupt:
                    signal.raise_signal(signal.SIGINT)  # Ctrl-C while the library reads
            except KeyboardInterrupt:
                pass
            raise ValueError("could not determine the shape of object type 'torch.storage.UntypedStorage'")
        return soup

    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job (CI) inherits SIGINT ignored
    monkeypatch.setattr(method, "soup_checkpoints", reader(True))
    out = tmp_path / "run"
    try:
        with pytest.raises(SystemExit) as exit_info:
            console(base_args(world, out))
    finally:
        after = signal.signal(signal.SIGINT, inherited)
    assert after is signal.default_int_handler  # Python's own handler is back after the run
    assert exit_info.value.code == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and messages(err)[-1].startswith("hf_unlearn: interrupted.")
    assert not out.exists() and (tmp_path / "run.incomplete" / "stages").is_dir()
    monkeypatch.setattr(method, "soup_checkpoints", reader(False))
    with pytest.raises(ValueError, match="could not determine the shape"):
        console(base_args(world, tmp_path / "other"))


@pytest.mark.parametrize("error, message", [
    (OSError(errno.ENOSPC, "No space left on device"), "[Errno 28] No space left on device"),
    # torch.save (the Trainer's optimizer state) past a full disk, as it raises it on Linux
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 98880 vs 98768"), "a checkpoint file stopped mid-write, as on a full disk ([enforce fail at inline_container.cc:672]"),
], ids=["os-error", "torch-save"])
def test_a_full_disk_while_writing_is_one_line(error, message, world, tmp_path, capsys, monkeypatch):
    from hf_unlearn import checkpointing

    monkeypatch.setattr(checkpointing, "save_stage", raising(error))
    from .helpers import base_args

    with pytest.raises(SystemExit) as exit_info:
        console(base_args(world, tmp_path / "run"))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"hf_unlearn: error: cannot write: {message}") and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tool, heavy", [(EVALUATE, "evaluate_pair"), (f"{AUDIT}.__main__", "audit_model")], ids=["evaluator", "audit"])
def test_ctrl_c_in_the_audit_or_the_evaluator_is_one_line(tool, heavy, world, capsys, monkeypatch):
    module = importlib.import_module(tool)
    monkeypatch.setattr(module, heavy, raising(KeyboardInterrupt))
    with pytest.raises(SystemExit) as exit_info:
        one_line_errors(module.main, tool_args(world))
    err = capsys.readouterr().err
    assert exit_info.value.code == 130 and "Traceback" not in err
    assert messages(err)[-1].startswith("hf_unlearn: interrupted.")


def test_a_full_disk_while_the_evaluator_writes_is_one_line(world, tmp_path, capsys, monkeypatch):
    from hf_unlearn import eval_cli

    monkeypatch.setattr(eval_cli, "write_json", raising(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(SystemExit) as exit_info:
        one_line_errors(eval_cli.main, [*tool_args(world), "--json", str(tmp_path / "figures.json")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err
    assert messages(err)[-1] == "hf_unlearn: error: cannot write: [Errno 28] No space left on device"


def test_a_publish_killed_between_its_renames_loses_neither_result(tmp_path, monkeypatch):
    """``publish`` sets the old result aside, then moves the new one in. Killed between the two, no output folder is
    left: the old result must be put back (the new one is still staged), and a publish killed after both renames must
    not leave the old result lying beside the new one."""
    from hf_unlearn import outputs

    out, staging = tmp_path / "run", tmp_path / "run.incomplete"
    aside, users = tmp_path / os.path.basename(outputs.previous_folder(str(out))), tmp_path / "run.old"
    for folder, text in ((out, "old"), (staging, "new"), (users, "the user's own")):
        folder.mkdir()
        (folder / "model.safetensors").write_text(text)
    real, renames = os.replace, []

    def killed_at_the_second_rename(src, dst):
        renames.append(dst)
        if len(renames) == 2:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_the_second_rename)
    with pytest.raises(KeyboardInterrupt):
        outputs.publish(str(staging), str(out), overwrite=True)
    monkeypatch.undo()
    assert not out.exists() and (aside / "model.safetensors").read_text() == "old"
    outputs.recover_publish(str(out))
    assert (out / "model.safetensors").read_text() == "old" and not aside.exists()
    assert (staging / "model.safetensors").read_text() == "new"
    outputs.publish(str(staging), str(out), overwrite=True)
    assert (out / "model.safetensors").read_text() == "new" and not staging.exists() and not aside.exists()
    shutil.copytree(out, aside)  # killed after both renames, before the old result was removed
    outputs.recover_publish(str(out))
    assert not aside.exists() and (out / "model.safetensors").read_text() == "new"
    assert (users / "model.safetensors").read_text() == "the user's own"  # a folder of the user's is never taken for it


def test_a_run_after_a_publish_killed_midway_finds_the_old_result(world, tmp_path, capsys):
    """The rerun's first check puts the result a killed publish set aside back in place, so it is neither lost nor
    silently replaced: without --overwrite_output_dir the run refuses before anything trains, as for any earlier result."""
    from hf_unlearn.outputs import previous_folder

    from .helpers import base_args

    aside = tmp_path / os.path.basename(previous_folder(str(tmp_path / "run")))
    aside.mkdir()
    (aside / "model.safetensors").write_text("an earlier result")
    with pytest.raises(SystemExit) as exit_info:
        console(base_args(world, tmp_path / "run"))
    assert exit_info.value.code == 2
    assert "already holds a result; pass --overwrite_output_dir" in messages(capsys.readouterr().err)[-1]
    assert (tmp_path / "run" / "model.safetensors").read_text() == "an earlier result" and not aside.exists()
    assert not (tmp_path / "run.incomplete").exists()  # refused at the first check, not after training
