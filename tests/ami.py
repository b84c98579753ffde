"""Real meeting speech with ground truth: the AMI excerpts of tests/data/ami/ (where they come from, and their
licence: its README).

Fourteen 30 s excerpts (16 kHz FLAC) in three sets, each an RTTM file of who spoke when and a UEM file of the
region scored: `train` (trn00..trn09, what the diarization was tuned on), `development` (dev00, dev01) and
`test` (tst00, tst01). The same reader takes any directory of audio (WAV or FLAC), RTTM and UEM files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.der import Turn

AMI = Path(__file__).resolve().parent / "data" / "ami"
SUBSETS = {"train": "debug.train", "development": "debug.development", "test": "debug.test"}
AUDIO_SUFFIXES = (".flac", ".wav")


@dataclass(frozen=True)
class Excerpt:
    uri: str
    audio: np.ndarray  # 16 kHz mono float32, the scored region only
    reference: list[Turn]  # times relative to the start of `audio`

    @property
    def duration(self) -> float:
        return len(self.audio) / 16000

    def cropped(self, start: float, end: float) -> Excerpt:
        """Seconds [start, end) of it, the reference shifted with them."""
        turns = [(max(s, start) - start, min(e, end) - start, who) for s, e, who in self.reference]
        audio = self.audio[int(start * 16000) : int(end * 16000)]
        return Excerpt(self.uri, audio, [(s, e, who) for s, e, who in turns if e > s])


def _read_rttm(text: str) -> dict[str, list[Turn]]:
    turns: dict[str, list[Turn]] = {}
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            turns.setdefault(fields[1], []).append((start, start + duration, fields[7]))
    return turns


def _read_uem(text: str) -> dict[str, tuple[float, float]]:
    regions = {}
    for line in text.splitlines():
        fields = line.split()
        if fields:
            regions[fields[0]] = (float(fields[2]), float(fields[3]))
    return regions


def _audio(source: Path, uri: str) -> Path:
    for suffix in AUDIO_SUFFIXES:
        if (path := source / f"{uri}{suffix}").is_file():
            return path
    raise FileNotFoundError(f"no audio for {uri} in {source} ({' or '.join(AUDIO_SUFFIXES)})")


def load_excerpts(source: Path = AMI, subset: str | None = "train") -> list[Excerpt]:
    """The annotated excerpts of the RTTM file of `subset` (one of SUBSETS) in `source`, or of every RTTM file
    in it (None), each cropped to its region in the UEM file of the same name, if there is one."""
    import soundfile

    stems = [SUBSETS[subset]] if subset else sorted(path.stem for path in source.glob("*.rttm"))
    excerpts = []
    for stem in stems:
        references = _read_rttm((source / f"{stem}.rttm").read_text(encoding="utf-8"))
        uem = source / f"{stem}.uem"
        regions = _read_uem(uem.read_text(encoding="utf-8")) if uem.is_file() else {}
        for uri, reference in sorted(references.items()):
            samples, rate = soundfile.read(_audio(source, uri), dtype="float32")
            if rate != 16000 or samples.ndim != 1:
                raise ValueError(f"{uri}: not 16 kHz mono")
            start, end = regions.get(uri, (0.0, len(samples) / rate))
            excerpts.append(Excerpt(uri, samples, reference).cropped(start, end))
    return excerpts
