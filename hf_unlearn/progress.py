"""Progress bars for the long steps outside the Trainer (Fisher scores, restore search, evaluation).

transformers' tqdm, so ``HF_HUB_DISABLE_PROGRESS_BARS`` / ``transformers.utils.logging.disable_progress_bar()``
silence them too; only the local main process draws, and very short loops draw nothing.
"""
from __future__ import annotations

from accelerate import PartialState
from transformers.utils import logging


def progress(iterable, desc: str, disable_below: int = 0):
    items = list(iterable)
    # an uninitialised state means a plain single process; never initialise it here (the pipeline chooses how)
    main = not PartialState._shared_state or PartialState().is_local_main_process
    return logging.tqdm(items, desc=desc, leave=False, disable=not main or len(items) < disable_below)
