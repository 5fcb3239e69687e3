"""Resolve a config entry to a model directory on disk: a local folder, or an HF:// download."""

from __future__ import annotations

from pathlib import Path

from .config import ModelEntry

CHAT_CONFIG = "mlc-chat-config.json"
# What the compile and the app need besides the weights: compiling reads the chat config alone.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
WEIGHT_PATTERNS = ("tensor-cache.json", "ndarray-cache.json", "params_shard_*.bin")


class FetchError(Exception):
    """The model directory could not be obtained; the message says what to do."""


def resolve_model_dir(entry: ModelEntry, *, with_weights: bool, offline: bool = False) -> Path:
    """The local directory holding `entry`'s model, downloading it for HF:// entries.

    `with_weights` asks for the weight shards too (bundled models); otherwise only the chat config
    and tokenizer files are fetched. `offline` uses huggingface_hub's cache alone.
    """
    if entry.local_dir is not None:
        if not (entry.local_dir / CHAT_CONFIG).is_file():
            if (entry.local_dir / "config.json").is_file():
                raise FetchError(
                    f"{entry.local_dir} is a Hugging Face checkpoint: this version packages "
                    f"MLC-format models only (a folder with {CHAT_CONFIG}, tensor-cache.json "
                    "and params shards); convert it first"
                )
            raise FetchError(f"{entry.local_dir} has no {CHAT_CONFIG}")
        return entry.local_dir
    assert entry.hf_repo is not None, "config.py guarantees a local dir or an HF repo"
    return _download(entry.hf_repo, entry.hf_revision, with_weights=with_weights, offline=offline)


def _download(repo: str, revision: str | None, *, with_weights: bool, offline: bool) -> Path:
    # Imported here: huggingface_hub is slow to import and most runs never download.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    patterns = [CHAT_CONFIG, *TOKENIZER_FILES, "LICENSE*", "NOTICE*", "README*"]
    if with_weights:
        patterns += WEIGHT_PATTERNS
    try:
        folder = Path(
            snapshot_download(
                repo, revision=revision, allow_patterns=patterns, local_files_only=offline
            )
        )
    except GatedRepoError:
        raise FetchError(f"HF://{repo} is gated: accept its terms and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise FetchError(f"HF://{repo} was not found (or is private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise FetchError(f"HF://{repo} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        raise FetchError(
            f"HF://{repo} is not in the local Hugging Face cache and could not be downloaded "
            "(offline or unreachable); run once with network access, or set HF_HUB_OFFLINE=1 "
            "after it is cached"
        ) from None
    except HfHubHTTPError as error:
        raise FetchError(f"downloading HF://{repo} failed: {error}") from None
    if not (folder / CHAT_CONFIG).is_file():
        raise FetchError(f"HF://{repo} has no {CHAT_CONFIG}: it is not an MLC-format model")
    return folder
