"""Model specs and cache-root resolution: pure functions, no hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from runpod_model_manager.cache import resolve_cache_root
from runpod_model_manager.errors import UserError
from runpod_model_manager.specs import ModelSpec, parse_model_spec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpt2", ModelSpec("huggingface", "gpt2")),
        ("openai/whisper-tiny", ModelSpec("huggingface", "openai/whisper-tiny")),
        ("iic/speech_campplus_sv_zh-cn_16k-common", ModelSpec("modelscope", "iic/speech_campplus_sv_zh-cn_16k-common")),
        ("damo/model@v1.0.1", ModelSpec("modelscope", "damo/model", "v1.0.1")),
        ("hf:iic/mirror", ModelSpec("huggingface", "iic/mirror")),
        ("ms:org/name@master", ModelSpec("modelscope", "org/name", "master")),
        ("org/name@" + "a" * 40, ModelSpec("huggingface", "org/name", "a" * 40)),
        ("org/name@refs/pr/1", ModelSpec("huggingface", "org/name", "refs/pr/1")),
    ],
)
def test_parse_model_spec(text, expected):
    assert parse_model_spec(text) == expected


def test_explicit_source_wins_over_auto_routing():
    assert parse_model_spec("iic/x", "huggingface").source == "huggingface"
    assert parse_model_spec("org/x", "modelscope").source == "modelscope"


def test_modelscope_orgs_are_overridable(monkeypatch):
    monkeypatch.setenv("RPMM_MODELSCOPE_ORGS", "myorg")
    assert parse_model_spec("myorg/x").source == "modelscope"
    assert parse_model_spec("iic/x").source == "huggingface"


@pytest.mark.parametrize(
    "text", ["", "/name", "org/", "a/b/c", "org/na me", "../etc", "org/name@", "org/..", "ms:gpt2"]
)
def test_malformed_ids_are_user_errors(text):
    with pytest.raises(UserError):
        parse_model_spec(text)


def test_include_exclude_filters():
    spec = ModelSpec("huggingface", "o/n", include=("*.json", "onnx/*"), exclude=("*fp16*",))
    assert spec.wants("config.json")
    assert spec.wants("onnx/model.onnx")
    assert not spec.wants("onnx/model_fp16.onnx")
    assert not spec.wants("pytorch_model.bin")


def test_cache_root_order(monkeypatch, tmp_path):
    for var in ("MODEL_CACHE_DIR", "RUNPOD_VOLUME_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_cache_root().path in (tmp_path / "models", Path("/workspace/models"), Path("/runpod-volume/models"))
    monkeypatch.setenv("RUNPOD_VOLUME_PATH", str(tmp_path / "vol"))
    assert resolve_cache_root().path == tmp_path / "vol" / "models"
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "cache"))
    assert resolve_cache_root().path == tmp_path / "cache"
    assert resolve_cache_root(tmp_path / "cli").path == tmp_path / "cli"
    assert resolve_cache_root(tmp_path / "cli").reason == "--cache-dir"
