"""Projects and downloaders as plugins: the shipped project, --all/--project/list, entry points, broken plugins."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from projects.base import BaseProject
from projects.loader import load_projects
from runpod_model_manager.plugins import discover
from tests.cli_helpers import REPO_ROOT, run_cli, run_python

ORIGINAL_FUNASR_MODELS = {
    "iic/speech_campplus_speaker-diarization_common",
    "damo/speech_fsmn_vad_zh-cn-16k-common-pytorch",
    "damo/speech_campplus_sv_zh-cn_16k-common",
    "damo/speech_campplus-transformer_scl_zh-cn_16k-common",
}


def serve_every_project_model(hub) -> list:
    """Small stand-in repos on the hub for every model the registered projects declare."""
    specs = [spec for project in load_projects().values() for spec in project.model_specs()]
    for spec in specs:
        files = {"configuration.json": b"{}", "weights/model.bin": spec.repo_id.encode() * 100}
        for pattern in spec.include:  # make sure each include pattern matches a file
            if "*" not in pattern:
                files[pattern] = b"included " + pattern.encode()
        hub.add_repo(spec.source, spec.repo_id, files)
    return specs


def test_speaker_diarization_keeps_the_original_modelscope_models():
    project = load_projects()["speaker_diarization"]
    modelscope_ids = {s.repo_id for s in project.model_specs() if s.source == "modelscope"}
    assert modelscope_ids >= ORIGINAL_FUNASR_MODELS
    assert {"vad", "speaker_diarization"} <= set(project.tasks)


def test_all_then_list_shows_every_model_complete(hub_env, tmp_path):
    specs = serve_every_project_model(hub_env.hub)
    cache = tmp_path / "cache"
    result = run_cli(hub_env.env, "--all", "--cache-dir", str(cache), "--json")
    assert result.returncode == 0, result.stderr
    assert {m["model"] for m in json.loads(result.stdout)["models"]} == {s.repo_id for s in specs}

    listing = run_cli(hub_env.env, "list", "--cache-dir", str(cache), "--json")
    rows = json.loads(listing.stdout)["models"]
    assert {r["model"] for r in rows} == {s.repo_id for s in specs}
    assert all(r["status"] == "complete" and r["bytes_on_disk"] > 0 for r in rows), rows

    table = run_cli(hub_env.env, "list", "--cache-dir", str(cache))
    assert "speaker_diarization" in table.stdout and "complete" in table.stdout


def test_list_reports_incomplete_and_missing_models(hub_env, tmp_path):
    serve_every_project_model(hub_env.hub)
    cache = tmp_path / "cache"
    model = "iic/speech_campplus_speaker-diarization_common"
    assert run_cli(hub_env.env, model, "--cache-dir", str(cache)).returncode == 0
    folder = cache / "modelscope" / "models" / model.replace("/", "--") / "snapshots" / "master"
    (folder / "weights" / "model.bin").unlink()
    rows = {
        r["model"]: r
        for r in json.loads(run_cli(hub_env.env, "list", "--cache-dir", str(cache), "--json").stdout)["models"]
    }
    assert rows[model]["status"] == "incomplete (1 of 2 files missing)"
    assert rows["damo/speech_fsmn_vad_zh-cn-16k-common-pytorch"]["status"] == "not downloaded"


def test_project_option_selects_one_project(hub_env, tmp_path):
    serve_every_project_model(hub_env.hub)
    result = run_cli(
        hub_env.env, "--project", "speaker_diarization", "--cache-dir", str(tmp_path), "--dry-run", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert {m["model"] for m in json.loads(result.stdout)["models"]} >= ORIGINAL_FUNASR_MODELS


def test_loader_module_prints_the_summary():
    result = run_python(
        {"PATH": "/usr/bin:/bin"}, "import runpy; runpy.run_module('projects.loader', run_name='__main__')"
    )
    assert result.returncode == 0, result.stderr
    assert "- speaker_diarization:" in result.stdout
    assert "modelscope:damo/speech_campplus_sv_zh-cn_16k-common" in result.stdout


@pytest.fixture
def plugin_dist(tmp_path) -> Path:
    """An installed third-party distribution (a dist-info folder on PYTHONPATH) adding a project and a source."""
    site = tmp_path / "site"
    pkg = site / "rpmm_extra"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "project.py").write_text(
        textwrap.dedent(
            """
            from projects.base import BaseProject, huggingface

            class ExtraProject(BaseProject):
                name = "extra"
                models = (huggingface("acme/extra", include=("*.json",)),)
            """
        )
    )
    (pkg / "mirror.py").write_text(
        textwrap.dedent(
            """
            from downloaders.huggingface import HuggingFaceDownloader

            class MirrorDownloader(HuggingFaceDownloader):
                '''A Hugging Face mirror, as a third-party source.'''
                source = "mirror"
            """
        )
    )
    (pkg / "broken.py").write_text("raise RuntimeError('this plugin is broken')\n")
    dist = site / "rpmm_extra-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rpmm-extra\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[runpod_model_manager.projects]\nextra = rpmm_extra.project:ExtraProject\nbroken = rpmm_extra.broken\n\n"
        "[runpod_model_manager.downloaders]\nmirror = rpmm_extra.mirror:MirrorDownloader\n"
    )
    return site


def test_entry_point_project_and_source(hub_env, plugin_dist, tmp_path):
    hub_env.hub.add_repo("huggingface", "acme/extra", {"config.json": b"{}", "big.bin": b"x" * 1000})
    env = {**hub_env.env, "PYTHONPATH": str(plugin_dist)}
    result = run_cli(env, "--project", "extra", "--cache-dir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    assert "warning: skipped entry point 'broken' (rpmm_extra.broken)" in result.stderr
    assert "this plugin is broken" in result.stderr
    [model] = json.loads(result.stdout)["models"]
    assert model["files"] == 1

    mirrored = run_cli(env, "mirror:acme/extra", "--cache-dir", str(tmp_path / "m"))
    assert mirrored.returncode == 0, mirrored.stderr
    assert (tmp_path / "m" / "huggingface" / "hub" / "models--acme--extra" / "refs" / "main").exists()


def test_broken_project_module_warns_and_the_others_load(tmp_path, monkeypatch):
    pkg = tmp_path / "someprojects"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text("from projects.base import BaseProject\nclass Good(BaseProject):\n    name = 'good'\n")
    (pkg / "bad.py").write_text("import not_a_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    warnings: list[str] = []
    found = discover("someprojects", BaseProject, "no.such.group", warnings.append)
    assert [cls.name for cls in found] == ["good"]
    assert len(warnings) == 1
    assert str(pkg / "bad.py") in warnings[0] and "not_a_module_anywhere" in warnings[0]
    sys.modules.pop("someprojects", None)


def test_missing_library_is_reported_with_the_pip_command():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["modelscope_hub"] = None  # as if the package were not installed
        from download_models import main
        sys.argv = ["download-models", "ms:org/name", "--cache-dir", sys.argv[1]]
        main()
        """
    )
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", code, "/tmp/rpmm-missing-lib"], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.returncode == 2
    assert "pip install 'modelscope>=1.40'" in result.stderr
    assert "Traceback" not in result.stderr
