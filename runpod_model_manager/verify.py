"""`verify`: re-hash what is on disk against the checksums the hub published, file by file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runpod_model_manager.checksums import file_digest
from runpod_model_manager.layout import UnsafePathError, inside
from runpod_model_manager.manager import ModelManager
from runpod_model_manager.reporting import printable
from runpod_model_manager.specs import ModelSpec


@dataclass
class VerifyReport:
    spec: ModelSpec
    commit: str | None = None
    checked: int = 0
    problems: dict[str, str] = field(default_factory=dict)  # repo path -> what is wrong
    bad_paths: list[Path] = field(default_factory=list)  # files to delete before a repair, inside the cache
    repaired: bool = False
    repair_error: str | None = None

    def remove_bad_files(self) -> None:
        for path in self.bad_paths:
            path.unlink(missing_ok=True)

    def summary(self) -> str:
        if not self.problems:
            return f"ok       {self.spec} ({self.checked} files checked)"
        lines = [f"BAD      {self.spec}: {len(self.problems)} of {self.checked} files"]
        lines += [f"    {printable(path)}: {problem}" for path, problem in sorted(self.problems.items())]
        if self.repaired:
            lines.append("    repaired: the bad files were downloaded again")
        elif self.repair_error:
            lines.append(f"    repair failed: {self.repair_error}")
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {
            "model": self.spec.repo_id,
            "source": self.spec.source,
            "commit": self.commit,
            "checked": self.checked,
            "problems": self.problems,
            "repaired": self.repaired,
            "repair_error": self.repair_error,
        }


def verify_models(manager: ModelManager, specs: list[ModelSpec]) -> list[VerifyReport]:
    reports = []
    for spec in dict.fromkeys(specs):
        report = VerifyReport(spec)
        reports.append(report)
        model, missing, _ = manager.local_state(spec)
        if model is None:
            report.problems["*"] = "not downloaded"
            continue
        report.commit = model.commit
        downloader = manager.downloader(spec.source)
        for file in model.selected:
            report.checked += 1
            entry = downloader.model_path(model) / file.path  # what a consumer opens: a link to the blob, or the file
            try:
                opened = inside(manager.cache.path, entry.resolve())
                stored = inside(manager.cache.path, downloader.blob_path(model, file)) if entry.is_symlink() else opened
            except UnsafePathError as exc:  # never hashed, never deleted
                report.problems[file.path] = str(exc)
                continue
            if file.path in missing:
                report.problems[file.path] = "missing or wrong size"
                report.bad_paths.append(stored)
            elif file.checksum and (actual := file_digest(opened, file.checksum)) != file.checksum:
                report.problems[file.path] = f"checksum {actual} differs from the hub's {file.checksum}"
                report.bad_paths.append(stored)
    return reports
