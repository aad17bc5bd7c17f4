"""Publishing a finished run on the Hub: one ``upload_folder`` of the final model folder."""
from __future__ import annotations

import os

from huggingface_hub import HfApi

from .errors import UsageError


class HubPushError(UsageError, RuntimeError):
    """The upload failed; the local model folder is complete and untouched."""


def push_output(folder: str, repo_id: str, private: bool = False, include_stages: bool = False, token: str | None = None) -> str:
    """Create (or reuse) ``repo_id`` and upload ``folder``: weights, processor, report, card, curve.

    Stage checkpoints (``stages/``) stay local unless ``include_stages``. Called only after the folder was
    published, so any failure here (no network, no token, no rights) loses nothing.
    """
    if not os.path.isfile(os.path.join(folder, "model.safetensors")) and not os.path.isfile(os.path.join(folder, "model.safetensors.index.json")):
        raise HubPushError(f"{folder!r} holds no safetensors model; nothing to push")
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=url.repo_id, folder_path=folder, repo_type="model",
            ignore_patterns=None if include_stages else ["stages/*", "stages/**"],
            commit_message="Upload unlearned model (hf_unlearn)",
        )
    except Exception as err:  # network, auth and permission errors all end the same way: local copy intact
        raise HubPushError(
            f"could not push {folder!r} to the Hub repo {repo_id!r}: {type(err).__name__}: {err}. "
            f"The model is saved locally in {folder!r}; upload it later with `hf upload {repo_id} {folder} --exclude 'stages/*'`"
        ) from err
    return str(url)
