"""Where a model comes from: a local checkpoint directory, an engine weights file, or a Hugging Face Hub id.

A Hub id ("apple/mobilevit-small") is resolved through huggingface_hub (the `hub` extra): from its local cache, and
from the network only when huggingface_hub is allowed to use it (HF_HUB_OFFLINE=1 or local_files_only=True keep it
in the cache). Only the files a checkpoint needs are fetched: the configs and the weights.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import TinyVitError

HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
PATTERNS = ["config.json", "preprocessor_config.json", "model.safetensors*", "pytorch_model.bin*"]


class HubError(TinyVitError, OSError):
    """A Hub id that could not be resolved (huggingface_hub missing, offline with an empty cache, no such repo)."""


def resolve(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """A local path as given, or the local snapshot directory of a Hub id."""
    path = Path(name_or_path)
    if path.exists():
        return path
    name = str(name_or_path)
    if not HUB_ID.fullmatch(name):
        raise FileNotFoundError(f"{name}: no such weights file or checkpoint directory (nor a Hub id like owner/name)")
    hint = "or pass a local checkpoint directory or engine weights file"
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise HubError(
            f"{name} looks like a Hub id, but huggingface_hub is not installed (pip install 'tinyvit-engine[hub]'); "
            f"{hint}"
        ) from None
    try:
        return Path(
            snapshot_download(
                name,
                allow_patterns=PATTERNS,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                token=token,
            )
        )
    except Exception as e:  # huggingface_hub raises many types for offline, missing and private repos
        first = str(e).splitlines()[0][:160] if str(e) else ""
        raise HubError(f"could not fetch {name} from the Hub ({type(e).__name__}: {first}); {hint}") from None
