"""speaker_diarization's segmentation model (pyannote/segmentation-3.0) is gated on Hugging Face: a user with
no token gets its other models and one sentence that says where to accept the conditions and what to pass."""

from __future__ import annotations

from projects.speaker_diarization import SEGMENTATION, SpeakerDiarization
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.test_deploy_files import fake_repo_files


def test_project_download_without_a_token_names_the_gated_model_and_what_to_do(hub_env, tmp_path):
    for spec in SpeakerDiarization.models:
        hub_env.hub.add_repo(spec.source, spec.repo_id, fake_repo_files(spec), gated=spec == SEGMENTATION)
    args = ("--project", "speaker_diarization", "--cache-dir", str(tmp_path), "--lock-file", str(tmp_path / "x"))

    result = run_cli(hub_env.env, *args)

    page = f"{hub_env.hub.url}/{SEGMENTATION.repo_id}"
    message = assert_one_line_error(result, 1, SEGMENTATION.repo_id, f"accept its conditions at {page}", "HF_TOKEN")
    assert message.count("\n") == 0, message  # the only failure
    assert f"1 of {len(SpeakerDiarization.models)} models failed" in result.stderr
    assert run_cli(hub_env.env, *args, "--token", hub_env.hub.token).returncode == 0
