"""MLC-LLM's four example app configs, and the hub repositories of the models they name.

The configs (tests/data/mlc-examples/<platform>-<app>.json) are MLC's `mlc-package-config.json`
of its iOS and Android MLCChat and MLCEngineExample apps, written out with the same keys and
values. Each model they name is served as an MLC repository `mlc-ai/<name>`: the chat config MLC
writes (tests/helpers/mlc_chat_configs.py), a tiny tokenizer, and a tensor-cache.json listing
every parameter with MLC's name, shape and dtype at its quantization, grouped into shards of at
most 32 MiB as MLC's converter groups them. The shards are lazy files (hf_hub.LazyFile) of the
real sizes, so none is ever held in memory. A repository whose shards are downloaded gets a
different byte in each shard, as real shards differ (huggingface_hub keeps one blob for files of
the same id, so identical shards would be downloaded once); the others are zeros, whose md5 per
size is cheap to cache.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

from tests.helpers.hf_hub import LazyFile, Repo, lazy_md5
from tests.helpers.mlc_chat_configs import chat_config
from tests.helpers.paths import REPO

EXAMPLES = REPO / "tests" / "data" / "mlc-examples"
CONFIGS = ("ios-MLCChat", "android-MLCChat", "ios-MLCEngineExample", "android-MLCEngineExample")
SHARD_CAP_BYTES = 32 << 20  # MLC's converter starts a new shard past 32 MiB
HF_PREFIX = "HF://"
_DTYPE_BYTES = {"float16": 2, "float32": 4, "uint32": 4}


def example_config(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def repo_id(entry: dict[str, Any]) -> str:
    """The hub repository of an HF:// model entry (`mlc-ai/<name>`)."""
    model = str(entry["model"])
    assert model.startswith(HF_PREFIX), model
    return model.removeprefix(HF_PREFIX)


def parameters(chats: list[dict[str, Any]]) -> list[list[tuple[str, list[int], str]]]:
    """The parameters of each chat config (see `_parameters_here`), worked out in one child
    process: TVM objects left in a test process have crashed its garbage collector later."""
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-m", "tests.helpers.mlc_examples"],
        input=json.dumps(chats),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        cwd=REPO,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"working out the parameters failed:\n{done.stderr[-4000:]}")
    return [[(n, shape, dtype) for n, shape, dtype in one] for one in json.loads(done.stdout)]


def _parameters_here(chat: dict[str, Any]) -> list[tuple[str, list[int], str]]:
    """(name, shape, dtype) of every stored parameter, in the packed order of the library.

    The names come from the family's `plan_params` and the scheme's `weight_names` (what our
    converter writes); the shapes and dtypes from the family's nn model built from the chat
    config without compiling it (the quantized layers know their NK / KN storage shapes), its
    symbolic `vocab_size` resolved from the chat config. The two lists must name the same
    parameters in the same order, or the generator stops.
    """
    from tvm.target import Target  # here: reading the example configs must not need TVM

    from packaging_plugin import families
    from packaging_plugin.config.chat_config import build_compile_request
    from packaging_plugin.config.devices import DEVICES
    from packaging_plugin.quantization.schemes import get_quantization

    request = build_compile_request(chat, {}, "android")
    model_type, model_config = request["model_type"], dict(request["model_config"])
    quant = get_quantization(request["quantization"])
    planned = [
        name
        for plan in families.plan_params(model_type, model_config)
        for name in (
            quant.weight_names(plan.name.removesuffix(".weight"))
            if plan.quantizable
            else (plan.name,)
        )
    ]
    module = families.model_module(model_type)
    model = module.create(model_type, model_config, quant, Target(DEVICES["android"].target))
    built = [
        (name, [d if isinstance(d, int) else int(chat[str(d.name)]) for d in p.shape], p.dtype)
        for name, p in model.state_dict().items()
    ]
    if [name for name, _, _ in built] != planned:
        raise AssertionError(f"{model_type}: plan_params and the nn model disagree on the names")
    return [(name, shape, str(dtype)) for name, shape, dtype in built]


def tensor_cache(
    chat: dict[str, Any], params: list[tuple[str, list[int], str]], *, distinct: bool = False
) -> tuple[dict[str, Any], dict[str, LazyFile]]:
    """MLC's tensor-cache.json for a chat config's parameters, and each shard's lazy file.

    A parameter goes into the open shard unless that would take it past the cap; one larger
    than the cap (an embedding) gets a shard of its own. `distinct`: shard N is all byte
    N % 255 + 1, else all zeros.
    """
    shards: list[dict[str, Any]] = []
    logical = 0
    elems_per_word = 32 // int(chat["quantization"][1]) if chat["quantization"][1] != "0" else 1
    for name, shape, dtype in params:
        nbytes = math.prod(shape) * _DTYPE_BYTES[dtype]
        if not shards or (shards[-1]["nbytes"] and shards[-1]["nbytes"] + nbytes > SHARD_CAP_BYTES):
            shards.append(
                {
                    "dataPath": f"params_shard_{len(shards)}.bin",
                    "format": "raw-shard",
                    "nbytes": 0,
                    "records": [],
                    "md5sum": "",
                }
            )
        shard = shards[-1]
        shard["records"].append(
            {
                "name": name,
                "shape": shape,
                "dtype": dtype,
                "format": "raw",
                "nbytes": nbytes,
                "byteOffset": shard["nbytes"],
            }
        )
        shard["nbytes"] += nbytes
        if not name.endswith(".q_scale"):  # the weights' own elements (a word packs several)
            logical += math.prod(shape) * (elems_per_word if name.endswith(".q_weight") else 1)
    files: dict[str, LazyFile] = {}
    for number, shard in enumerate(shards):
        lazy = LazyFile(shard["nbytes"], number % 255 + 1 if distinct else 0)
        shard["md5sum"] = lazy_md5(lazy.size, lazy.byte)
        files[shard["dataPath"]] = lazy
    total = sum(shard["nbytes"] for shard in shards)
    index = {
        "metadata": {
            "ParamSize": logical,
            "ParamBytes": total,
            "BitsPerParam": round(8.0 * total / logical, 4),
        },
        "records": shards,
    }
    return index, files


def tokenizer_files() -> dict[str, bytes]:
    """A tiny word-level tokenizer (tokenizers' JSON format) and its config."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3, "world": 4}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    return {
        "tokenizer.json": json.dumps(tokenizer).encode(),
        "tokenizer_config.json": json.dumps(config).encode(),
    }


def mlc_repos(names: list[str], downloaded: Collection[str] = ()) -> dict[str, Repo]:
    """The hub repositories `mlc-ai/<name>` (by repo id): chat config, tokenizer, tensor cache
    and lazy shards; those of the `downloaded` names are distinct (see the module docstring)."""
    chats = [chat_config(name) for name in names]
    repos: dict[str, Repo] = {}
    for name, chat, params in zip(names, chats, parameters(chats), strict=True):
        index, shards = tensor_cache(chat, params, distinct=name in downloaded)
        files: dict[str, bytes | LazyFile] = {
            "mlc-chat-config.json": json.dumps(chat, indent=2).encode(),
            "tensor-cache.json": json.dumps(index, indent=2).encode(),
            **tokenizer_files(),
        }
        files.update(shards)
        repos[f"mlc-ai/{name}"] = Repo(files)
    return repos


def shard_names(repo: Repo) -> set[str]:
    return {name for name in repo.files if name.startswith("params_shard_")}


def tensor_cache_of(repo: Repo) -> dict[str, Any]:
    data = repo.files["tensor-cache.json"]
    assert isinstance(data, bytes)
    return json.loads(data)


def write_config(data: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4) + "\n")
    return path


if __name__ == "__main__":  # the child of `parameters`: a chat config in, its parameters out
    print(json.dumps([_parameters_here(chat) for chat in json.load(sys.stdin)]))
