"""The environment that points the real hub clients (and our CLI) at a LocalHub, and nothing else.

Shared by the test fixtures and the benchmark: caches and homes under one root, telemetry, xet and
implicit tokens off, and every variable cleared that could reach the internet or carry a token.
"""

from __future__ import annotations

from pathlib import Path

CLEARED_VARS = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HUB_ENABLE_HF_TRANSFER",
    "MODELSCOPE_API_TOKEN",
    "MODELSCOPE_DOMAIN",
    "MODELSCOPE_PREFER_AI_SITE",
    "MODEL_CACHE_DIR",
    "RUNPOD_VOLUME_PATH",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


def client_env(hub_url: str, root: Path) -> dict[str, str]:
    """Variables to set (on top of an environment without CLEARED_VARS) for clients of the hub at `hub_url`."""
    hf_home = root / "hf_home"
    return {
        "HF_ENDPOINT": hub_url,
        "MODELSCOPE_ENDPOINT": hub_url,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "DISABLE_SYMLINKS_WARNING": "1",
        "MODELSCOPE_CACHE": str(root / "ms_cache"),
        "MODELSCOPE_HOME": str(root / "ms_home"),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
