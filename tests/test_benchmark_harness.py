"""The benchmark harness's bookkeeping: variant parsing, mean ± std tables, resumable doc blocks."""
import importlib.util
import os

import pytest

from tests.helpers import ROOT

spec = importlib.util.spec_from_file_location("bench", os.path.join(ROOT, "benchmarks", "unlearning.py"))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def cell(variant, seed, fa, ra, comp):
    return {"variant": variant, "seed": seed, "metrics": {"original": {"FA": 0.5, "RA": 0.8, "OA": 0.7, "ZS/x": 0.6}, "unlearned": {"FA": fa}},
            "fractions": {"RA": ra, "OA": 1.0, "ZS": 1.0}, "composite": comp, "alpha": 1.0, "method_s": 10.0, "wall_s": 20.0,
            "subgroups": {"d/a": {"original": 0.5, "unlearned": fa}}, "flags": {}, "hyperparameters": {"chosen": {"learning_rate": 1e-4, "forget_weight": 2.0}}}


def test_variants_are_typed_from_the_arguments_dataclass():
    v = bench._parse_variants("a:top_k_modules=4,no_lora=true,forget_learning_rate=2e-3;b")
    assert v == {"a": {"top_k_modules": 4, "no_lora": True, "forget_learning_rate": 0.002}, "b": {}}
    with pytest.raises(SystemExit, match="unknown setting"):
        bench._parse_variants("a:nope=1")
    # a value may hold commas: only ",key=" starts the next setting
    assert bench._parse_variants("c:target_modules=v_proj,fc1,top_k_modules=4") == {"c": {"target_modules": "v_proj,fc1", "top_k_modules": 4}}


def test_table_reports_mean_and_sample_std_over_seeds():
    cells = [cell("full", 0, 0.0, 1.0, 0.9), cell("full", 1, 0.02, 0.98, 0.8), cell("no_remind", 0, 0.1, 0.9, 0.5)]
    text = bench.table(cells, ["full", "no_remind"])
    full = [line for line in text.splitlines() if line.startswith("| full")][0]
    assert "| 2 |" in full and "1.0% ± 1.4%" in full and "0.990 ± 0.014" in full and "0.850 ± 0.071" in full
    assert "| no_remind | 1 | 10.0% |" in text  # one seed: no spread is invented
    assert "*" not in text and "resumed" not in text


def test_a_resumed_cells_run_time_is_marked():
    resumed = dict(cell("full", 1, 0.0, 1.0, 0.9), resumed=True)
    text = bench.table([cell("full", 0, 0.0, 1.0, 0.9), resumed, cell("ga", 0, 0.0, 0.0, 0.0)], ["full", "ga"])
    rows = {line.split(" |")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert "| 20 ± 0* |" in rows["| full"] and "| 20 |" in rows["| ga"]
    assert "resumed after an interruption" in text


def test_doc_block_is_replaced_not_duplicated(tmp_path):
    doc = tmp_path / "B.md"
    doc.write_text("# Benchmarks\n\nintro\n")
    bench.write_doc(str(doc), "ablation", "first")
    bench.write_doc(str(doc), "ablation", "second")
    body = doc.read_text()
    assert body.count("<!-- ablation:start -->") == 1 and "second" in body and "first" not in body and "intro" in body


def test_later_seeds_reuse_the_first_seeds_search():
    ours = cell("full", 0, 0.0, 1.0, 1.0)
    assert bench._fixed(ours) == {"forget_learning_rate": 1e-4, "forget_weight": 2.0}
    base = dict(ours, flags={"method": "rl"}, hyperparameters={"chosen": {"learning_rate": 1e-5, "forget_weight": 0.5}})
    assert bench._fixed(base) == {"baseline_learning_rate": 1e-5, "baseline_weight": 0.5}


def test_misses_names_each_bar_the_mean_fails():
    good = cell("full", 0, 0.0, 1.0, 1.0)
    assert bench.misses([good]) == ""
    bad = dict(cell("full", 0, 0.024, 0.978, 0.9), fractions={"RA": 0.978, "OA": 1.0, "ZS/imagenette": 0.975, "ZS": 0.983})
    assert bench.misses([bad]) == "FA 2.4%, RA 0.978, ZS/imagenette 0.975"


def test_all_tasks_are_the_comparison_tasks_and_unknown_names_fail_early(tmp_path):
    assert set(bench.BENCHMARK_TASKS) <= set(bench.TASKS) and len(bench.BENCHMARK_TASKS) == 5
    for name in ("cifar-automobile-vs-truck", "cifar-red-automobile"):
        assert bench.TASKS[name]["max_forget"] and bench.TASKS[name]["max_retain"]
    with pytest.raises(SystemExit, match="unknown task"):
        bench.main(["--tasks", "pacs-dog-sktch", "--out", str(tmp_path), "--no-doc"])
    assert not any(tmp_path.iterdir())  # failed before any cell ran


def test_wins_names_the_best_composite_and_every_column_a_baseline_wins():
    ours = [cell("forget_remind_restore", 0, 0.0, 1.00, 0.95), cell("forget_remind_restore", 1, 0.0, 1.02, 0.97)]
    ft = [dict(cell("ft", 0, 0.3, 1.10, 0.60), method_s=5.0)]
    text = bench.wins(ours + ft, ["forget_remind_restore", "ft"], "forget_remind_restore")
    assert "Best mean composite: **forget_remind_restore** (0.960)." in text
    assert "Ahead of forget_remind_restore on RA (1.010): ft 1.100." in text
    assert "on method s (10): ft 5." in text
    assert "on FA" not in text and "on OA" not in text  # ft forgets less; OA ties
    better = [dict(cell("rl", 0, 0.0, 1.0, 0.99))]
    assert "Best mean composite: **rl** (0.990); forget_remind_restore has 0.960." in bench.wins(ours + better, ["forget_remind_restore", "rl"], "forget_remind_restore")
    assert "Not separated" not in text  # 0.960 ± 0.014 against ft's 0.6: a clear lead


def test_wins_calls_a_lead_within_the_seeds_spread_a_tie():
    ours = [cell("forget_remind_restore", s, 0.0, 1.0, c) for s, c in enumerate((0.967, 0.969))]
    near = [cell("clip_erase", s, 0.0, 1.0, c) for s, c in enumerate((0.966, 0.968))]
    far = [cell("rl", s, 0.0, 1.0, c) for s, c in enumerate((0.950, 0.952))]
    text = bench.wins(ours + near + far, ["forget_remind_restore", "clip_erase", "rl"], "forget_remind_restore")
    assert "Best mean composite: **forget_remind_restore** (0.968)." in text
    assert "Not separated from it by the seeds (the gap is within the sum of the two standard deviations): clip_erase 0.967 ± 0.001 (2 seeds)." in text
    assert "rl" not in text.split("Not separated")[1].split("\n")[0]


def test_report_only_writes_finished_cells_and_lists_the_missing_ones(tmp_path):
    import json

    for v, seed in (("forget_remind_restore", 0), ("ga", 0)):
        folder = tmp_path / "runs" / "methods" / "pacs-dog-sketch" / v / f"s{seed}"
        folder.mkdir(parents=True)
        search = {"steps": 3, "grid": [{}], "chosen": {"learning_rate": 1e-5}}  # as the pipeline reports it
        c = dict(cell(v, seed, 0.0 if v != "ga" else 0.2, 1.0, 0.9), hyperparameters={"chosen": {"learning_rate": 1e-5}, "budget_steps": 9, "search": search})
        (folder / "cell.json").write_text(json.dumps(c))
    doc = tmp_path / "B.md"
    figure = tmp_path / "figures" / "pacs-dog-sketch-subgroups.png"
    bench.main(["--suite", "methods", "--tasks", "pacs-dog-sketch", "--seeds", "0,1", "--out", str(tmp_path / "runs"),
                "--doc", str(doc), "--report-only", "--no-doc"])
    assert not doc.exists() and not figure.exists()  # --no-doc leaves the doc and its figures alone
    bench.main(["--suite", "methods", "--tasks", "pacs-dog-sketch", "--seeds", "0,1", "--out", str(tmp_path / "runs"),
                "--doc", str(doc), "--report-only"])
    assert figure.exists()
    body = doc.read_text()
    assert "python benchmarks/unlearning.py --suite methods --tasks pacs-dog-sketch --seeds 0,1 --out" in body and "--report-only" not in body
    assert "| forget_remind_restore | 1 | 0.0% |" in body and "| ga | 1 | 20.0% |" in body
    assert "forget_remind_restore/s1" in body and "clip_erase/s0" in body  # missing cells are named
    assert "Chosen on calibration: forget_remind_restore learning_rate 1e-05; ga learning_rate 1e-05." in body
    assert not (tmp_path / "runs" / "methods" / "pacs-dog-sketch" / "ft").exists()  # nothing ran


def test_calibration_trace_reads_stages_and_the_chosen_alpha(tmp_path):
    import json

    spec = importlib.util.spec_from_file_location("trace", os.path.join(ROOT, "benchmarks", "calibration_trace.py"))
    trace = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trace)
    report = {
        "stages": {"forget": {"calibration": {"calibration/FA": 0.04, "calibration/RA": 0.9, "calibration/OA": 0.85}},
                   "remind": {"calibration": {"calibration/FA": 0.07, "calibration/RA": 0.92, "calibration/OA": 0.87}}},
        "restore": {"alpha": 0.9, "curve": [{"alpha": 1.0, "FA": 0.07}, {"alpha": 0.9, "FA": 0.096}]},
        "metrics": {"unlearned": {"FA": 0.073}}, "composite_score": 0.967,
    }
    run = tmp_path / "task" / "variant" / "s0" / "model"
    run.mkdir(parents=True)
    (run / "unlearning_report.json").write_text(json.dumps(report))
    text = trace.main([str(run)])
    assert "| task/variant/s0 | forget 0.040 / 0.900 / 0.850; remind 0.070 / 0.920 / 0.870 | 0.90 (0.096) | 7.3% | 0.967 |" in text
    # a report that records the original's calibration figures gives each stage's calibration composite too
    report["restore"]["original_calibration"] = {"FA": 0.8, "RA": 0.92, "OA": 0.87}
    (run / "unlearning_report.json").write_text(json.dumps(report))
    text = trace.main([str(run)])
    assert "| forget 0.040 / 0.900 / 0.850 (0.968); remind 0.070 / 0.920 / 0.870 (0.969) |" in text
    with pytest.raises(SystemExit, match="no unlearning_report.json"):
        trace.main([str(tmp_path)])


def test_a_cell_records_the_commit_it_ran_at(tmp_path):
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def git(*cmd):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *cmd], check=True, capture_output=True)

    assert bench.code_version(str(tmp_path)) is None  # not a git checkout
    (tmp_path / "hf_unlearn").mkdir()
    (tmp_path / "hf_unlearn" / "a.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "first")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert bench.code_version(str(tmp_path)) == head
    (tmp_path / "benchmarks" / "cells" / "audit").mkdir(parents=True)  # a cell another benchmark process just wrote
    (tmp_path / "benchmarks" / "cells" / "audit" / "cell.json").write_text("{}")
    assert bench.code_version(str(tmp_path)) == head
    (tmp_path / "hf_unlearn" / "a.py").write_text("x = 2\n")
    assert bench.code_version(str(tmp_path)) == head + "-dirty"
    cells = [dict(cell("ga", 0, 0.0, 1.0, 0.9), code=head), dict(cell("ga", 1, 0.0, 1.0, 0.9), code=head), cell("ga", 2, 0.0, 1.0, 0.9)]
    assert bench.code_line(cells) == f"- Code the cells ran at: {head} (2), unrecorded (1)."
    assert bench.code_line(cells[2:]) == ""


def test_the_throughput_baton_gives_each_variant_one_step_in_turn_until_it_leaves():
    """The lockstep throughput benchmark is only fair if no variant runs two steps in a row while another waits."""
    import threading

    tspec = importlib.util.spec_from_file_location("throughput", os.path.join(ROOT, "benchmarks", "throughput.py"))
    throughput = importlib.util.module_from_spec(tspec)
    tspec.loader.exec_module(throughput)
    baton, order, steps = throughput.Baton(3), [], {0: 2, 1: 4, 2: 3}

    def work(i):
        for step in range(steps[i]):
            baton.wait(i)
            order.append(i)
            baton.done(i, leave=step == steps[i] - 1)

    threads = [threading.Thread(target=work, args=(i,)) for i in (2, 0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert order == [0, 1, 2, 0, 1, 2, 1, 2, 1]


def audited(variant, seed, ra, worst, relearn_a, relearn_b, probe):
    scores = {"FA": 0.0, "worst_FA": worst, "worst_phrasing": "the {}.", "mean_FA": worst / 4, "relearn_retain_only": relearn_a,
              "relearn_retain_plus_forget": relearn_b, "probe": probe}
    original = dict(scores, FA=0.5, worst_FA=0.7, mean_FA=0.5, relearn_retain_only=0.2, relearn_retain_plus_forget=0.2, probe=0.5)
    bars = {"phrasing": 0.03, "relearn_retain_only": 0.05, "relearn_retain_plus_forget": 0.05, "probe": 0.25}
    return dict(cell(variant, seed, 0.0, ra, 0.99), audit={"unlearned": scores, "original": original, "bars": bars, "verdicts": {}})


def test_audit_table_names_the_deepest_and_every_attack_a_baseline_wins():
    ours = [audited("forget_remind_restore", s, 1.0, 0.01, 0.01, b, 0.5) for s, b in enumerate((0.02, 0.04))]
    ga = [audited("ga", 0, 0.1, 0.0, 0.0, 0.0, 0.1)]  # deepest, but it breaks retention (RA 0.1)
    ft = [audited("ft", 0, 1.0, 0.15, 0.0, 0.5, 0.5)]
    cells = ours + ga + ft
    text = bench.audit_table(cells, ["forget_remind_restore", "ga", "ft"])
    rows = {line.split(" |")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert "| 2 | 0.0% ± 0.0% | 0.2% ± 0.0% | 1.0% ± 0.0% | 1.0% ± 0.0% | 3.0% ± 1.4% | 50.0% ± 0.0% |" in rows["| forget_remind_restore"]
    assert "| linear probe | 3/4 held, 0.78 |" in rows["| forget_remind_restore"]  # probe 0.5 against a bar of 0.25: ratio 2
    assert "| worst phrasing FA, relearn (b): retain + 16 forget, linear probe | 1/4 held, 4.25 |" in rows["| ft"]
    assert "| 70.0% |" in rows["| original"] and "| 3.0% | 5.0% | 5.0% | 25.0% |" in rows["| bar (forgotten at or under)"]
    lines = bench.depth_lines(cells, ["forget_remind_restore", "ga", "ft"], "forget_remind_restore")
    assert "Deepest (most attacks held, then the lowest mean score-to-bar ratio): **ga** (4/4 held, 0.10); forget_remind_restore: 3/4 held, 0.78." in lines
    assert "Deepest of those that keep the FA, RA, OA bars: **forget_remind_restore** (3/4 held, 0.78)." in lines
    assert "Deeper than forget_remind_restore on linear probe (50.0%): ga 10.0%." in lines
    assert "Deeper than forget_remind_restore on relearn (a): retain only (1.0%): ga 0.0%, ft 0.0%." in lines
    assert "on worst phrasing FA (1.0%): ga 0.0%." in lines and "ft 15.0%" not in lines


def test_the_audit_suite_runs_only_where_the_baselines_settings_are_recorded(tmp_path):
    with pytest.raises(SystemExit, match="calibrated settings, recorded for pacs-dog-sketch only, not pacs-person-art"):
        bench.main(["--suite", "audit", "--tasks", "pacs-person-art", "--out", str(tmp_path), "--no-doc"])
    with pytest.raises(SystemExit, match="unknown variant"):
        bench.main(["--suite", "audit", "--only", "gaa", "--out", str(tmp_path), "--no-doc"])
    assert not any(tmp_path.iterdir())
    from hf_unlearn.methods import METHODS

    assert set(bench.CALIBRATED["pacs-dog-sketch"]) == set(METHODS) - {"forget_remind_restore"}  # every baseline is audited


def _pretrain_module():
    spec = importlib.util.spec_from_file_location("pretrain", os.path.join(ROOT, "benchmarks", "pretrain_reference.py"))
    pretrain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pretrain)
    return pretrain


def test_a_reference_is_pretrained_from_scratch_without_its_subgroup(world, tmp_path):
    """benchmarks/pretrain_reference.py on the tiny demo world: random weights of the given architecture, trained on
    every train row but the subgroup's, saved as a standard checkpoint with its record."""
    import json

    import torch
    from transformers import CLIPModel

    from hf_unlearn.data import load_image_dataset
    from hf_unlearn.spec import SubgroupSpec

    pretrain = _pretrain_module()
    model_dir, data_dir = world
    record = pretrain.main(["--output_dir", str(tmp_path / "ref"), "--without", "label=circle,domain=sketch", "--datasets", data_dir,
                            "--config_from", model_dir, "--samples", "64", "--batch_size", "16"])
    train = load_image_dataset(data_dir)["train"]
    forget = SubgroupSpec.parse("label=circle,domain=sketch").mask(train).sum()
    assert record["training_rows"] == {os.path.basename(data_dir): len(train) - forget} and record["steps"] == 4
    saved = CLIPModel.from_pretrained(tmp_path / "ref")
    original = CLIPModel.from_pretrained(model_dir)
    assert not torch.allclose(saved.text_projection.weight, original.text_projection.weight)  # not the given model's weights
    assert json.loads((tmp_path / "ref" / "pretraining.json").read_text())["zeroshot_test"].keys() == {f"ZS/{os.path.basename(data_dir)}"}


def test_an_interrupted_pretraining_resumes_to_the_weights_of_an_uninterrupted_one(world, tmp_path, monkeypatch, capsys):
    """A day-long pretraining must survive an interruption: it checkpoints (safetensors and JSON), and
    --resume_from_checkpoint goes on from the last checkpoint to exactly the weights of a run that was never stopped;
    a checkpoint is neither overwritten unasked nor resumed under other settings, nor lost when a kill leaves it set aside
    by the replacement of the next."""
    import json

    import torch
    from safetensors.torch import load_file

    from hf_unlearn.outputs import previous_folder

    pretrain = _pretrain_module()
    model_dir, data_dir = world
    flags = ["--datasets", data_dir, "--config_from", model_dir, "--samples", "96", "--batch_size", "16", "--save_steps", "2"]
    pretrain.main(["--output_dir", str(tmp_path / "straight"), *flags])

    loss, calls = pretrain.contrastive_loss, []

    def crash_at_step_5(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return loss(*args)

    monkeypatch.setattr(pretrain, "contrastive_loss", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        pretrain.main(["--output_dir", str(tmp_path / "resumed"), *flags])
    checkpoint = tmp_path / "resumed.incomplete" / "checkpoint"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["step"] == 4 and not (tmp_path / "resumed").exists()
    assert sorted(p.name for p in checkpoint.iterdir()) == ["model.safetensors", "optimizer.safetensors", "trainer_state.json"]
    at_step_4 = load_file(checkpoint / "model.safetensors")
    os.replace(checkpoint, previous_folder(str(checkpoint)))  # killed while the next checkpoint replaced it: not lost
    monkeypatch.setattr(pretrain, "contrastive_loss", loss)

    # both refusals come before any data is read: a day of training is not overwritten unasked
    monkeypatch.setattr(pretrain, "load_training_images", None)
    with pytest.raises(SystemExit, match="holds an interrupted run; pass --resume_from_checkpoint to continue it, or delete it"):
        pretrain.main(["--output_dir", str(tmp_path / "resumed"), *flags])
    with pytest.raises(SystemExit, match=r"other settings \(learning_rate: 0.001 -> 0.002\); rerun with its settings"):
        pretrain.main(["--output_dir", str(tmp_path / "resumed"), *flags, "--learning_rate", "2e-3", "--resume_from_checkpoint"])
    monkeypatch.undo()
    capsys.readouterr()
    record = pretrain.main(["--output_dir", str(tmp_path / "resumed"), *flags, "--resume_from_checkpoint"])
    assert "resumed at step 4/6" in capsys.readouterr().out and record["steps"] == 6
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert not (tmp_path / "resumed" / "checkpoint").exists() and not (tmp_path / "resumed.incomplete").exists()
    assert not torch.equal(resumed["text_projection.weight"], at_step_4["text_projection.weight"])  # steps 5-6 were trained
