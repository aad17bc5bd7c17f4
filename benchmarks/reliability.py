"""docs/RELIABILITY.md: every bad input of the catalogue in tests/test_reliability.py, run as a user runs it (the
recipe in a fresh process), with its exit code, seconds to failure and message.

    python benchmarks/reliability.py            # builds a tiny demo world in a temporary folder; ~5 min on 2 cores
"""
from __future__ import annotations

import importlib.util
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _catalogue():
    spec = importlib.util.spec_from_file_location("catalogue", os.path.join(ROOT, "tests", "test_reliability.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    from hf_unlearn.demo import ensure_demo

    cat = _catalogue()
    work = tempfile.mkdtemp(prefix="reliability-")
    world = ensure_demo(os.path.join(work, "world"), data_kwargs={"n_train_per_group": 6, "n_test_per_group": 2},
                        pretrain_kwargs={"steps": 30, "batch_size": 32})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    rows = []
    for case in cat.CASES + cat.TOOL_CASES:
        tmp = tempfile.mkdtemp(dir=work)
        extra = case.setup(tmp, world) if case.setup else {}
        before = cat._snapshot(tmp)
        program = [os.path.join(ROOT, "recipes", "forget_remind_restore.py")] if case.tool == "recipe" else ["-m", case.tool]
        t0 = time.time()
        proc = subprocess.run([sys.executable, *program, *cat.command(case, world, tmp, extra)],
                              capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
        seconds = time.time() - t0
        lines = cat.messages(proc.stderr)
        clean = cat._snapshot(tmp) == before and "Traceback" not in proc.stderr
        rows.append((case.what, proc.returncode, seconds, lines[-1] if lines else "", clean))
        print(f"{case.id:24} exit {proc.returncode} {seconds:5.1f}s {'clean' if clean else 'LEFT FILES OR TRACEBACK'}", flush=True)
    rows += _interrupted_and_full_disk(cat, world, work, env)
    with open(os.path.join(ROOT, "docs", "RELIABILITY.md"), "w") as f:
        f.write(HEADER.format(n=len(rows), slowest=max(r[2] for r in rows), clean=sum(r[4] for r in rows)))
        for what, code, seconds, message, clean in rows:
            message = message.replace("|", "\\|").replace(work, "<tmp>")
            f.write(f"| {what} | {code} | {seconds:.1f} | `{message}` |{'' if clean else ' **left files or a traceback**'}\n")


def _run_until(argv, env, marker: str | None, preexec=None) -> tuple[int, float, str]:
    """Run the recipe; once ``marker`` shows on its stderr, send it SIGINT (Ctrl-C). Exit code, seconds, stderr."""
    t0 = time.time()
    def child():
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a job started in the background inherits SIGINT ignored
        if preexec:
            preexec()

    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "recipes", "forget_remind_restore.py"), *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, preexec_fn=child)
    err, sent = b"", False
    os.set_blocking(proc.stderr.fileno(), False)
    while proc.poll() is None:
        err += proc.stderr.read() or b""
        if marker and not sent and marker.encode() in err:
            proc.send_signal(signal.SIGINT)
            sent = True
        time.sleep(0.05)
    err += proc.stderr.read() or b""
    return proc.returncode, time.time() - t0, err.decode(errors="replace")


def _file_size_limit():
    """What a full disk does to a writer: a write past 100 kB fails (EFBIG) instead of killing the process."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _interrupted_and_full_disk(cat, world, work, env) -> list[tuple]:
    from tests.helpers import base_args

    rows = []
    for stage, marker in (("loading the model and data", "Loading weights"), ("the forget stage", "forget stage"), ("the remind stage", "remind stage"),
                          ("the restore search", "restore search")):
        tmp = tempfile.mkdtemp(dir=work)
        code, seconds, err = _run_until(base_args(world, os.path.join(tmp, "run"), "--forget_epochs", "30"), env, marker)
        lines = cat.messages(err)
        clean = not os.path.exists(os.path.join(tmp, "run")) and "Traceback" not in err
        rows.append((f"Ctrl-C in {stage}", code, seconds, lines[-1] if lines else "", clean))
        print(f"ctrl-c {stage:20} exit {code} {seconds:5.1f}s {'clean' if clean else 'PUBLISHED OR TRACEBACK'}", flush=True)
    tmp = tempfile.mkdtemp(dir=work)
    code, seconds, err = _run_until(base_args(world, os.path.join(tmp, "run")), env, None, preexec=_file_size_limit)
    lines = cat.messages(err)
    rows.append(("a full disk (no file may grow past 100 kB)", code, seconds, lines[-1] if lines else "",
                 not os.path.exists(os.path.join(tmp, "run")) and "Traceback" not in err))
    return rows


HEADER = """# Reliability: every bad input, one clear line

Each row is a case of `tests/test_reliability.py` (which checks, in-process, the exit code, that the message is the
last line printed and matches, that no traceback is printed and that nothing is left on disk), run here as a user runs
it: `python recipes/forget_remind_restore.py <base command> <the bad input>`, each in a fresh process on the tiny demo
world, on the 2-core development machine. Rows that name `python -m hf_unlearn.audit` or `python -m
hf_unlearn.eval_cli` run that command on its own instead (base: `--model <demo model> --original <demo model>
--dataset <demo data> --forget label=circle,domain=sketch`). "Seconds" is the whole process, Python start-up and
imports included: a bad setting of the recipe, the evaluator or the audit is refused before torch and the run's
modules load (about 1.5 s here); an error found in the model or the data comes after them (8-13 s). The last five rows
are a Ctrl-C sent while each step runs (the run keeps its finished stages and last checkpoint in
`<output_dir>.incomplete` for `--resume_from_checkpoint`, and publishes nothing), and a write that fails as on a full
disk (`tests/test_reliability.py` checks both in-process, and that the audit and the evaluator run on their own end a
Ctrl-C with exit 130 and a full disk with exit 1, each in one line).

```bash
python benchmarks/reliability.py     # writes this file
```

{n} cases; the slowest failed after {slowest:.1f} s; {clean} of {n} left nothing on disk and printed no traceback.
Exit codes: 2 a usage error, 1 an I/O error while writing (a full disk), 3 a run that saved its model but did not
forget (or, as `--require_deep_forgetting` / `--require_retention` ask, not deeply, or lost retention;
`tests/test_outcome.py`), 130 Ctrl-C. "Left nothing" means: for a bad input, no file at all; for Ctrl-C and a
full disk, nothing published in place of the output folder. Under `accelerate launch` the same line is printed; add `-q`
to `accelerate launch` to keep its own summary short.

| bad input | exit | seconds | message (last line printed) |
|---|---|---|---|
"""

if __name__ == "__main__":
    main()
