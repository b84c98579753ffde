"""Model specs: what to download (source, repo ID, revision, file filters), parsed from the CLI or a project."""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field, replace

from . import validate
from .errors import UserError

SOURCE_ALIASES = {
    "hf": "huggingface",
    "huggingface": "huggingface",
    "ms": "modelscope",
    "modelscope": "modelscope",
}

# Organisations that publish on ModelScope; `--source auto` sends their models there.
# Override with RPMM_MODELSCOPE_ORGS="org1,org2" (replaces this list).
DEFAULT_MODELSCOPE_ORGS = (
    "iic",
    "damo",
    "alibaba",
    "alibaba-pai",
    "qwen-ms",
    "modelscope",
    "AI-ModelScope",
    "ZhipuAI",
    "LLM-Research",
    "Shanghai_AI_Laboratory",
    "OpenBMB",
    "deepseek-ai-ms",
)

_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"  # 96 characters at most, as on the Hugging Face Hub
_REPO_ID = re.compile(rf"^(?:{_REPO_PART}/)?{_REPO_PART}$")


def modelscope_orgs() -> tuple[str, ...]:
    override = os.environ.get("RPMM_MODELSCOPE_ORGS")
    if override is not None:
        return tuple(org.strip() for org in override.split(",") if org.strip())
    return DEFAULT_MODELSCOPE_ORGS


@dataclass(frozen=True)
class ModelSpec:
    """One model to fetch. `revision=None` means the source's default branch."""

    source: str
    repo_id: str
    revision: str | None = None
    include: tuple[str, ...] = field(default=())
    exclude: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        # a revision names folders (refs/<revision>, snapshots/<revision>): checked wherever a spec is made
        validate_repo_id(self.repo_id)
        if self.revision is not None:
            try:
                validate.revision(self.revision)
            except validate.InvalidValue as exc:
                raise UserError(f"{exc}: give a branch, tag or commit name.") from None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{self.source}:{self.repo_id}{rev}"

    def wants(self, path: str) -> bool:
        """Whether a repo file passes the include/exclude glob patterns."""
        if self.include and not any(fnmatch.fnmatch(path, pat) for pat in self.include):
            return False
        return not any(fnmatch.fnmatch(path, pat) for pat in self.exclude)

    def with_overrides(self, revision: str | None, include: tuple, exclude: tuple) -> ModelSpec:
        return replace(
            self,
            revision=revision or self.revision,
            include=tuple(include) or self.include,
            exclude=tuple(exclude) or self.exclude,
        )


def normalize_source(name: str) -> str:
    try:
        return SOURCE_ALIASES[name.lower()]
    except KeyError:
        # Third-party sources are validated by the downloader factory.
        return name.lower()


def validate_repo_id(repo_id: str) -> None:
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise UserError(
            f"{validate.show(repo_id)} is not a valid model ID: use 'org/name' (or 'name' on Hugging Face), "
            "each part at most 96 letters, digits, '.', '_' and '-'."
        )


def parse_model_spec(text: str, default_source: str = "auto") -> ModelSpec:
    """Parse `[hf:|ms:]org/name[@revision]`; in auto mode ModelScope organisations go to ModelScope."""
    source = None
    body = text.strip()
    prefix, sep, rest = body.partition(":")
    if sep:
        source = normalize_source(prefix)
        body = rest
    repo_id, at, revision = body.partition("@")
    if at and not revision:
        raise UserError(f"'{text}' has nothing after '@': give a branch, tag or commit name.")
    validate_repo_id(repo_id)
    if source is None:
        source = normalize_source(default_source)
    if source == "auto":
        org = repo_id.split("/", 1)[0] if "/" in repo_id else ""
        source = "modelscope" if org in modelscope_orgs() else "huggingface"
    if source == "modelscope" and "/" not in repo_id:
        raise UserError(f"'{text}' is not a valid ModelScope model ID: ModelScope IDs are 'org/name'.")
    return ModelSpec(source=source, repo_id=repo_id, revision=revision or None)
