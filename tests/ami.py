"""Real meeting speech with ground truth: the AMI excerpts that pyannote.audio's sdist ships for its tests.

`tests/speech.txt` pins the sdist by hash; `pip download` puts it in tests/data/pypi/ (see README). Its
tests/data/ holds ten 60 s AMI excerpts (trn00..trn09; trn00 is stored as `trñ00.wav`) plus dev00,
dev01, tst00 and tst01, each annotated (RTTM) over a region given by a UEM file: the first 30 s.
AMI is CC-BY-4.0, pyannote.audio MIT. The same reader takes a directory of WAV, RTTM and UEM files.
"""

from __future__ import annotations

import io
import tarfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.der import Turn

SDIST = Path(__file__).resolve().parent / "data" / "pypi" / "pyannote_audio-4.0.7.tar.gz"
FETCH_COMMAND = "pip download --no-deps --no-binary :all: --require-hashes -r tests/speech.txt -d tests/data/pypi"
SUBSETS = {"train": "debug.train", "development": "debug.development", "test": "debug.test"}


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


def _files(source: Path) -> dict[str, bytes]:
    """Name -> bytes of the files of a directory, or of the sdist's tests/data/."""
    if source.is_dir():
        return {_ascii(path.name): path.read_bytes() for path in source.iterdir() if path.is_file()}
    with tarfile.open(source) as sdist:
        members = [m for m in sdist.getmembers() if m.isfile() and m.name.split("/")[1:3] == ["tests", "data"]]
        return {_ascii(m.name.rsplit("/", 1)[1]): sdist.extractfile(m).read() for m in members}


def _ascii(name: str) -> str:
    """`trñ00.wav` -> `trn00.wav`: the sdist stores one file under a non-ASCII name its RTTM does not use."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()


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


def load_excerpts(source: Path = SDIST, subset: str = "train") -> list[Excerpt]:
    """The annotated excerpts of `source` (the sdist: one of SUBSETS; a directory: every RTTM in it)."""
    import soundfile

    files = _files(source)
    stems = [SUBSETS[subset]] if not source.is_dir() else [n[:-5] for n in sorted(files) if n.endswith(".rttm")]
    excerpts = []
    for stem in stems:
        references = _read_rttm(files[f"{stem}.rttm"].decode())
        regions = _read_uem(files[f"{stem}.uem"].decode()) if f"{stem}.uem" in files else {}
        for uri, reference in sorted(references.items()):
            samples, rate = soundfile.read(io.BytesIO(files[f"{uri}.wav"]), dtype="float32")
            if rate != 16000 or samples.ndim != 1:
                raise ValueError(f"{uri}.wav is not 16 kHz mono")
            start, end = regions.get(uri, (0.0, len(samples) / rate))
            excerpts.append(Excerpt(uri, samples, reference).cropped(start, end))
    return excerpts
