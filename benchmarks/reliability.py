"""docs/RELIABILITY.md: every bad input of the catalogue in tests/test_reliability.py, run as a user runs it (the
recipe in a fresh process), with its exit code, seconds to failure and message.

    python benchmarks/reliability.py            # builds a tiny demo world in a temporary folder; ~5 min on 2 cores
"""
from __future__ import annotations

import importlib.util
import os
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
    for case in cat.CASES:
        tmp = tempfile.mkdtemp(dir=work)
        extra = case.setup(tmp, world) if case.setup else {}
        before = cat._snapshot(tmp)
        t0 = time.time()
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "recipes", "forget_remind_restore.py"), *cat.command(case, world, tmp, extra)],
                              capture_output=True, text=True, env=env, timeout=600)
        seconds = time.time() - t0
        lines = cat.messages(proc.stderr)
        clean = cat._snapshot(tmp) == before and "Traceback" not in proc.stderr
        rows.append((case.what, proc.returncode, seconds, lines[-1] if lines else "", clean))
        print(f"{case.id:24} exit {proc.returncode} {seconds:5.1f}s {'clean' if clean else 'LEFT FILES OR TRACEBACK'}", flush=True)
    with open(os.path.join(ROOT, "docs", "RELIABILITY.md"), "w") as f:
        f.write(HEADER.format(n=len(rows), slowest=max(r[2] for r in rows), clean=sum(r[4] for r in rows)))
        for what, code, seconds, message, clean in rows:
            message = message.replace("|", "\\|").replace(work, "<tmp>")
            f.write(f"| {what} | {code} | {seconds:.1f} | `{message}` |{'' if clean else ' **left files or a traceback**'}\n")


HEADER = """# Reliability: every bad input, one clear line

Each row is a case of `tests/test_reliability.py` (which checks, in-process, the exit code, that the message is the
last line printed and matches, that no traceback is printed and that nothing is left on disk), run here as a user
runs it: `python recipes/forget_remind_restore.py <base command> <the bad input>`, each in a fresh process on the
tiny demo world, on the 2-core development machine. "Seconds" is the whole process, Python start-up and imports
(about 5 s of it) included.

```bash
python benchmarks/reliability.py     # writes this file
```

{n} cases; the slowest failed after {slowest:.1f} s; {clean} of {n} left nothing on disk and printed no traceback.
Exit codes: 2 a usage error, 1 an I/O error while writing (a full disk), 3 a run that saved its model but did not
forget (`tests/test_outcome.py`), 130 Ctrl-C (`tests/test_reliability.py::test_ctrl_c_in_each_stage_says_how_to_resume`:
in each stage the finished stages and the last checkpoint are kept in `<output_dir>.incomplete` for
`--resume_from_checkpoint`, and nothing is published). Under `accelerate launch` the same line is printed; add `-q`
to `accelerate launch` to keep its own summary short.

| bad input | exit | seconds | message (last line printed) |
|---|---|---|---|
"""

if __name__ == "__main__":
    main()
