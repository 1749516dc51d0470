"""Facts about a model read from its directory's `config.json` (and `tokenizer_config.json`), no weights.

The one place that answers "how long may an input be, how many layers, what kind of model" before
anything loads, so that settings which cannot fit the model are refused in milliseconds, not after
a model load (or a training run).

    facts = model_facts("minilm-l6")     # ModelFacts(model_type='bert', num_layers=6, max_positions=512, ...)
    model_facts("smollm2-135m")          # None until its first conversion wrote config.json
    head_facts("minilm-l6").lm_head      # None: an encoder without its MLM head (no weights, no conversion)
    decoder_only(model.config)           # True for Llama, GPT-2, ...: a causal-LM class and no masked-LM class

Kind (decoder / encoder / encoder-decoder), LM head (causal / masked / none), positions and
decoder-only are answered here and nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Keys under which configs of different families give the position table size and the layer count.
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "max_sequence_length", "seq_length", "n_ctx")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
# RoBERTa-style models number positions from padding_idx + 1, so the table holds two rows no token uses.
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "roberta-prelayernorm", "data2vec-text")
DECODER_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi", "phi3", "gpt2", "gpt_neox",
                 "gptj", "opt", "bloom", "falcon", "olmo", "olmo2", "smollm3")
# Architecture class names that carry a pretrained LM head, by kind of head.
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
MASKED_SUFFIXES = ("ForMaskedLM", "ForPreTraining")
# Tokenizers without a length limit report a huge sentinel (transformers' VERY_LARGE_INTEGER, 1e30).
NO_TOKENIZER_LIMIT = 10**9


@dataclass(frozen=True)
class ModelFacts:
    path: Path
    model_type: str
    architectures: tuple[str, ...]
    kind: str
    """`encoder`, `decoder` or `encoder-decoder`."""
    num_layers: int | None
    max_positions: int | None
    """Longest input in tokens: the position table, or the tokenizer's limit when that is lower."""
    limit_source: str
    """Which setting gave `max_positions` (for messages)."""


def model_facts(name: str) -> ModelFacts | None:
    """Facts of `model.name` (embedded name or local directory); None when they cannot be known
    without loading: a hub id, or smollm2-135m before its one-time conversion."""
    directory = facts_dir(name)
    return read_facts(directory) if directory is not None else None


def resolved_facts(name: str) -> ModelFacts | None:
    """Facts of the directory `model.name` resolves to (converting smollm2-135m once if needed, as
    loading would); None for a hub id."""
    from tunelab.models import resolve_model_path

    path = Path(resolve_model_path(name))
    return read_facts(path) if (path / "config.json").is_file() else None


@dataclass(frozen=True)
class HeadFacts:
    """What a model's pretrained head can do, from its architecture names (no weights)."""

    architectures: tuple[str, ...]
    encoder_decoder: bool
    what: str
    """The model in words, for messages."""

    @property
    def lm_head(self) -> str | None:
        """`causal_lm`, `masked_lm`, or None when the checkpoint has no pretrained LM head."""
        return lm_head(self.architectures)

    @property
    def causal_lm(self) -> bool:
        """Scores continuations: a causal LM head on a model that is not an encoder-decoder."""
        return self.lm_head == "causal_lm" and not self.encoder_decoder


def head_facts(name: str) -> HeadFacts | None:
    """The head facts of `model.name` without weights (nor smollm2's conversion: embedded models say
    theirs); None for a hub id, whose load says whether it can be fetched."""
    from tunelab.models import EMBEDDED, resolve_model_path

    if name in EMBEDDED:
        entry = EMBEDDED[name]
        return HeadFacts(entry.architectures, False, entry.description)
    path = Path(resolve_model_path(name))
    if not (path / "config.json").is_file():
        return None
    config = read_json(path / "config.json")
    archs = tuple(config.get("architectures") or ())
    return HeadFacts(archs, bool(config.get("is_encoder_decoder")),
                     f"a {config.get('model_type', 'unknown')} model with architectures {list(archs)}")


def lm_head(architectures: tuple[str, ...]) -> str | None:
    if any(a.endswith(CAUSAL_SUFFIXES) for a in architectures):
        return "causal_lm"
    if any(a.endswith(MASKED_SUFFIXES) for a in architectures):
        return "masked_lm"
    return None


def decoder_only(model_config) -> bool:
    """Decoder-only families (Llama, GPT-2, ...) have a causal-LM class and no masked-LM class
    (transformers' auto mappings, by `model_config.model_type`)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

    model_type = getattr(model_config, "model_type", None)
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def facts_dir(name: str) -> Path | None:
    """The local directory whose config.json describes `name`, converting or downloading nothing.
    A local directory without config.json is a ModelError (see models.check_model_dir)."""
    from tunelab.models import EMBEDDED, embedded_path, mpnet_dir, require_mpnet, resolve_model_path, smollm2_dir

    if name == "mpnet-base":
        require_mpnet()  # opt-in: without its packages, say `make mpnet` now rather than in every cell
    built_on_first_use = {"smollm2-135m": smollm2_dir, "mpnet-base": mpnet_dir}
    if name in built_on_first_use:
        target = built_on_first_use[name]()
        return target if (target / "config.json").is_file() else None
    path = embedded_path(name) if name in EMBEDDED else Path(resolve_model_path(name))
    return path if path.is_dir() else None


def read_facts(directory: Path) -> ModelFacts:
    config = read_json(directory / "config.json")
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    model_type = str(config.get("model_type") or "unknown")
    positions, source = position_limit(config, text, model_type)
    tokenizer_limit = read_json(directory / "tokenizer_config.json").get("model_max_length")
    if isinstance(tokenizer_limit, int) and tokenizer_limit < NO_TOKENIZER_LIMIT and (positions is None or tokenizer_limit < positions):
        positions, source = tokenizer_limit, "model_max_length in tokenizer_config.json"
    architectures = tuple(config.get("architectures") or ())
    return ModelFacts(directory, model_type, architectures, model_kind(config, architectures),
                      first_int(config, text, LAYER_KEYS)[0], positions, source)


def position_limit(config: dict, text: dict, model_type: str) -> tuple[int | None, str]:
    positions, key = first_int(config, text, POSITION_KEYS)
    if positions is None:
        return None, ""
    if model_type in OFFSET_POSITIONS:
        pad = config.get("pad_token_id")
        positions -= (1 if pad is None else int(pad)) + 1
    return positions, f"{key} in config.json"


def first_int(config: dict, text: dict, keys: tuple[str, ...]) -> tuple[int | None, str]:
    for source in (config, text):
        for key in keys:
            if isinstance(source.get(key), int) and source[key] > 0:
                return source[key], key
    return None, ""


def model_kind(config: dict, architectures: tuple[str, ...]) -> str:
    if config.get("is_encoder_decoder"):
        return "encoder-decoder"
    causal = any(a.endswith(CAUSAL_SUFFIXES) for a in architectures)
    if config.get("is_decoder") or causal or config.get("model_type") in DECODER_TYPES:
        return "decoder"
    return "encoder" if architectures or config.get("model_type") else "unknown"


def read_json(path: Path) -> dict:
    """The JSON object in `path`; {} when the file is absent or not an object (loading reports those)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
