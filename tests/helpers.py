"""Shared by the recipe-level tests: the fast settings and the argument list for the tiny demo world."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--forget_epochs", "1", "--forget_min_steps", "0", "--remind_epochs", "1", "--batch_size", "8", "--fisher_samples", "8", "--top_k_modules", "2",
        "--alpha_grid", "1.0,0.5", "--max_other", "16", "--max_calibration", "4", "--logging_steps", "1",
        "--allow_incomplete_forgetting", "--no_audit"]  # these runs test the plumbing on a tiny world, not how well it forgets


def held_out_copy(world, tmp_path) -> str:
    """The tiny world's dataset under another path, named ``data`` as the original: a zero-shot set for tests (the
    training dataset itself is refused as one)."""
    import shutil

    dst = os.path.join(str(tmp_path), "held-out", "data")
    shutil.copytree(world[1], dst)
    return dst


def base_args(world, out, *extra):
    model_dir, data_dir = world
    return ["--model_name_or_path", model_dir, "--dataset", data_dir, "--forget", "label=circle,domain=sketch",
            "--output_dir", str(out), *FAST, *extra]
