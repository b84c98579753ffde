"""What a new user sees: output that fits an 80-column terminal, plain lines that say what they mean, -q, escaped
names, did-you-mean for a mistyped command, and the notes that keep `complete` honest."""

from __future__ import annotations

import dataclasses
import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

import pytest

from runpod_model_manager.reporting import PlainReporter, PlainUploadReporter, printable
from tests.cli_helpers import REPO_ROOT, assert_one_line_error, run_cli, run_python
from tests.hub import HF, MS

MiB = 1 << 20
LONG_NAME = "checkpoints/a-rather-long-folder-name/model-00001-of-00002.safetensors"
ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-Za-z]|[=>78])")


def run_in_terminal(env: dict[str, str], *args: str, columns: int = 80, timeout: float = 120) -> tuple[int, str]:
    """The CLI with stdin, stdout and stderr on a pseudo-terminal `columns` wide: (exit code, what it showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    clean = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "download_models.py"), *args],
        env={**clean, "PYTHONPATH": str(REPO_ROOT), "TERM": "xterm-256color"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=REPO_ROOT,
        start_new_session=True,
    )
    os.close(slave)
    shown, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the CLI closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return proc.wait(timeout=30), shown.decode("utf-8", "replace")


def screen_lines(shown: str) -> list[str]:
    """Every line the terminal got, control sequences removed, split at line feeds and carriage returns."""
    return [line for line in re.split(r"\r\n|\n|\r", ANSI.sub("", shown)) if line.strip()]


def test_every_line_fits_an_80_column_terminal(hub_env, tmp_path):
    hub = hub_env.hub
    hub.add_repo(HF, "acme/wide-model-name", {"config.json": b"{}", LONG_NAME: os.urandom(12 * MiB)})
    hub.faults.bandwidth = 4 * MiB  # a few seconds of bars
    code, shown = run_in_terminal(hub_env.env, "hf:acme/wide-model-name", "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, shown
    lines = screen_lines(shown)
    too_wide = [line for line in lines if len(line) > 80]
    assert not too_wide, too_wide
    assert any("MB/s" in line and "…" in line for line in lines), lines  # a bar row, its name shortened
    assert not [line for line in lines if line.strip() in ("MB", "kB", "GB", "B")]  # no unit wrapped alone
    assert not [line for line in lines if "0/0" in line]  # no empty total bar
    first_total = next(i for i, line in enumerate(lines) if line.startswith("total"))
    assert any(line.startswith("cache:") for line in lines[:first_total])
    assert any(line.startswith("1 model: 0 complete, 1 downloaded") for line in lines)


def test_plain_progress_says_what_it_counts():
    stream = io.StringIO()
    reporter = PlainReporter(stream)
    reporter.INTERVAL = 0
    reporter.planned(files=2, nbytes=4_000_000)
    reporter.file_started("org/name: a.bin", 3_000_000, 0)
    reporter.advance("org/name: a.bin", 3_000_000)
    reporter.file_done("org/name: a.bin", 3_000_000)
    reporter.advance("org/name: b.bin", 0)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "to download: 2 files, 4.0 MB"
    assert lines[2].startswith("progress: 3.0 MB of 4.0 MB downloaded (75%), 0 of 2 files done, ")
    assert lines[-1].startswith("progress: 3.0 MB of 4.0 MB downloaded (75%), 1 of 2 files done, ")
    assert lines[-1].endswith("/s")
    unplanned = io.StringIO()
    reporter = PlainUploadReporter(unplanned)  # push does not say what it will move
    reporter.INTERVAL = 0
    reporter.file_started("org/name: a.bin", 3_000_000, 0)
    reporter.advance("org/name: a.bin", 2_000_000)
    assert unplanned.getvalue().splitlines()[0] == "uploading org/name: a.bin (3.0 MB)"
    assert unplanned.getvalue().splitlines()[1].startswith("progress: 2.0 MB uploaded so far, 0 files done, ")


def test_quiet_prints_the_summary_and_errors_only(hub_env, tmp_path):
    hub_env.hub.add_repo(HF, "org/q", {"a.txt": b"a"})
    result = run_cli(hub_env.env, "hf:org/q", "-q", "--cache-dir", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1 model: 0 complete, 1 downloaded (1 B)\n"
    assert result.stderr == ""
    failed = run_cli(hub_env.env, "hf:org/q", "hf:org/none", "-q", "--cache-dir", str(tmp_path / "c"))
    assert failed.stdout == "2 models: 1 complete, 0 downloaded (0 B), 1 failed\n"
    assert failed.stderr.startswith("FAILED huggingface:org/none: repository not found")


def test_dry_run_of_a_complete_model_says_complete_and_specs_print_once(hub_env, tmp_path):
    hub_env.hub.add_repo(MS, "org/done", {"a.txt": b"a"})
    cache = str(tmp_path / "c")
    assert run_cli(hub_env.env, "ms:org/done@master", "--cache-dir", cache).returncode == 0
    dry = run_cli(hub_env.env, "ms:org/done@master", "--dry-run", "--cache-dir", cache)
    assert dry.returncode == 0, dry.stderr
    assert "complete       modelscope:org/done@master (1 files, 1 B)" in dry.stdout
    assert "would download" not in dry.stdout and "@ master" not in dry.stdout
    assert "1 model: 1 complete, 0 to download (0 B)" in dry.stdout


def test_a_lock_file_in_the_working_directory_says_it_pins(hub_env, tmp_path):
    commit = hub_env.hub.add_repo(HF, "org/pinned", {"a.txt": b"a"})
    entry = hub_env.hub.file(HF, "org/pinned", "a.txt")
    files = [{"path": "a.txt", "size": 1, "checksum": f"git-sha1:{entry.blob_id}"}]
    model = {"source": HF, "id": "org/pinned", "revision": None, "commit": commit, "files": files}
    (tmp_path / "models.lock").write_text(json.dumps({"version": 1, "models": [model]}))
    result = run_cli(hub_env.env, "hf:org/pinned", "--cache-dir", str(tmp_path / "c"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pinned by models.lock (1 models); `download-models lock --upgrade` to move" in result.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["lst"], "did you mean `list`?"),
        (["--cache-dir", "X", "lsit"], "did you mean `list`?"),
        (["gpt2", "prune"], "`prune` is a command: put it first"),
    ],
)
def test_a_mistyped_command_is_not_downloaded(hub_env, tmp_path, args, fragment):
    result = run_cli(hub_env.env, *args)
    assert_one_line_error(result, 2, fragment, "write hf:")
    assert list(hub_env.hub.log) == []  # nothing was asked of the hub


def test_a_command_after_options_runs_that_command(hub_env, tmp_path):
    result = run_cli(hub_env.env, "--cache-dir", str(tmp_path / "c"), "list", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cache"] == str(tmp_path / "c")


def test_loader_module_help():
    result = run_python(
        {"PATH": "/usr/bin:/bin"},
        "import sys, runpy; sys.argv = ['x', '--help']; runpy.run_module('projects.loader', run_name='__main__')",
    )
    assert result.returncode == 0, result.stderr
    assert "Print every registered project" in result.stdout and "project(s)" not in result.stdout


def test_control_characters_in_file_names_are_escaped_everywhere(hub_env, tmp_path):
    """A hostile hub's file names must not forge output lines (newline) or reorder them (RTL override)."""
    hub = hub_env.hub
    names = {"fake\nFAILED other: forged.txt": b"x", "evil\u202etxt.exe": b"y"}
    hub.add_repo(HF, "org/ctl", {"a.txt": b"a", "b.txt": b"b"})
    commit = hub.repo(HF, "org/ctl").resolve(None)
    for placeholder, name in zip(("a.txt", "b.txt"), names, strict=True):
        commit.files[name] = dataclasses.replace(commit.files.pop(placeholder), path=name)
    cache = str(tmp_path / "c")
    env = hub_env.env
    outputs = [
        run_cli(env, "hf:org/ctl", "--dry-run", "--cache-dir", cache),
        run_cli(env, "hf:org/ctl", "--cache-dir", cache, "-v"),
        run_cli(env, "hf:org/ctl", "--json", "--cache-dir", cache),
    ]
    text = "".join(r.stdout + r.stderr for r in outputs)
    assert "\u202e" not in text
    assert not [line for line in text.splitlines() if line.startswith("FAILED other")]
    assert "fake\\nFAILED other: forged.txt" in outputs[0].stdout
    assert "evil\\u202etxt.exe" in outputs[0].stdout
    assert "done org/ctl: fake\\nFAILED other: forged.txt" in outputs[1].stderr
    assert "done org/ctl: evil\\u202etxt.exe" in outputs[1].stderr
    assert printable("données/é\tx\x1b[2J") == "données/é\\tx\\x1b[2J"


def test_download_verify_rehashes_before_trusting(hub_env, tmp_path):
    hub_env.hub.add_repo(HF, "org/flip", {"w.bin": b"\x00" * 100_000})
    cache = tmp_path / "c"
    assert run_cli(hub_env.env, "hf:org/flip", "--cache-dir", str(cache)).returncode == 0
    blob = (
        cache / "huggingface" / "hub" / "models--org--flip" / "blobs" / hub_env.hub.file(HF, "org/flip", "w.bin").etag
    )
    with open(blob, "r+b") as f:  # a byte flipped on disk: same size
        f.seek(5000)
        f.write(b"\x01")
    trusting = run_cli(hub_env.env, "hf:org/flip", "--cache-dir", str(cache), "--json")
    assert json.loads(trusting.stdout)["models"][0]["status"] == "complete"  # sizes only, as documented
    checked = run_cli(hub_env.env, "hf:org/flip", "--verify", "--cache-dir", str(cache), "--json")
    model = json.loads(checked.stdout)["models"][0]
    assert model["status"] == "downloaded" and model["downloaded_files"] == ["w.bin"]
    assert blob.read_bytes() == b"\x00" * 100_000


def test_verify_escapes_the_names_it_reports(hub_env, tmp_path):
    hub = hub_env.hub
    hub.add_repo(HF, "org/rtl", {"a.txt": b"a", "b.txt": b"bb"})
    commit = hub.repo(HF, "org/rtl").resolve(None)
    commit.files["evil\u202etxt.exe"] = dataclasses.replace(commit.files.pop("b.txt"), path="evil\u202etxt.exe")
    cache = tmp_path / "c"
    assert run_cli(hub_env.env, "hf:org/rtl", "--cache-dir", str(cache)).returncode == 0
    snapshot = cache / "huggingface" / "hub" / "models--org--rtl" / "snapshots" / commit.sha
    (snapshot / "evil\u202etxt.exe").resolve().write_bytes(b"XX")  # same size, other bytes
    result = run_cli(hub_env.env, "verify", "hf:org/rtl", "--cache-dir", str(cache))
    assert result.returncode == 1
    assert "    evil\\u202etxt.exe: checksum" in result.stdout and "\u202e" not in result.stdout


def test_env_lines_survive_eval_of_a_path_with_spaces_and_a_closed_pipe(hub_env, tmp_path):
    cache = tmp_path / "my models"
    script = (
        f'eval "$({sys.executable} download_models.py env --cache-dir "$1")" && printf "%s\\n" "$HF_HOME"'
        f' && {sys.executable} download_models.py env --cache-dir "$1" | head -n 1 >/dev/null'
    )
    env = {**hub_env.env, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        ["bash", "-c", script, "bash", str(cache)], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(cache / "huggingface")
    assert result.stderr == ""  # the reader that stopped early (`head`) gets no error about its pipe
