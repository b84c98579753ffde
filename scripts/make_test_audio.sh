#!/usr/bin/env bash
# Regenerate tests/data/two_speakers.wav (16 kHz mono, 16-bit) and tests/data/two_speakers.json (ground
# truth: speech segments in seconds and who speaks each). Two synthetic voices take turns with silences
# between them. Needs espeak-ng and sox (Debian: apt-get install espeak-ng sox); the tests only read the
# committed output, so CI needs neither.
set -euo pipefail

out_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/data"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out_dir"

rate=16000
# speaker|espeak-ng voice|pitch (0-99)|words per minute
declare -A voice=(
  [alice]="en-us+f2|70|165"
  [bob]="en-gb-scotland+m7|30|130"
)
# speaker|silence before (seconds)|text. No punctuation inside a turn: a pause there would be a
# (correct) VAD split that the one-segment-per-turn ground truth does not list.
turns=(
  "bob|0.6|Welcome to the weekly planning meeting and thank you for joining me today"
  "alice|1.0|Many thanks for having me as I prepared a short update about the new release"
  "bob|0.9|Lovely so walk us through every change that went into this release"
  "alice|1.2|We fixed the download resume bug and the cache now works on shared volumes"
  "bob|0.8|Are there any risks we should know about before the launch"
  "alice|1.1|Only that larger models still take a while to load on a cold worker"
)
tail_silence=0.7

utterance() {  # speaker text output.wav: synthesize, peak-normalise, trim edge silence, 16 kHz mono 16-bit
  local name="$1" text="$2" wav="$3" spec v pitch speed
  spec="${voice[$name]}"
  IFS='|' read -r v pitch speed <<<"$spec"
  espeak-ng -v "$v" -p "$pitch" -s "$speed" -w "$work/raw.wav" "$text"
  sox -D "$work/raw.wav" -r "$rate" -c 1 -b 16 "$wav" \
    gain -n -3 silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse
}

pieces=()
segments=()
clock=0
for index in "${!turns[@]}"; do
  IFS='|' read -r name gap text <<<"${turns[$index]}"
  sox -D -n -r "$rate" -c 1 -b 16 "$work/gap$index.wav" trim 0 "$gap"
  utterance "$name" "$text" "$work/turn$index.wav"
  duration="$(soxi -D "$work/turn$index.wav")"
  start="$(echo "$clock + $gap" | bc -l)"
  end="$(echo "$start + $duration" | bc -l)"
  segments+=("$(printf '    {"start": %.3f, "end": %.3f, "speaker": "%s"}' "$start" "$end" "$name")")
  pieces+=("$work/gap$index.wav" "$work/turn$index.wav")
  clock="$end"
done
sox -D -n -r "$rate" -c 1 -b 16 "$work/tail.wav" trim 0 "$tail_silence"
sox -D "${pieces[@]}" "$work/tail.wav" "$out_dir/two_speakers.wav"

{
  printf '{\n  "audio": "two_speakers.wav",\n  "sample_rate": %d,\n' "$rate"
  printf '  "duration": %.3f,\n' "$(soxi -D "$out_dir/two_speakers.wav")"
  printf '  "segments": [\n'
  last=$((${#segments[@]} - 1))
  for index in "${!segments[@]}"; do
    printf '%s%s\n' "${segments[$index]}" "$([ "$index" -lt "$last" ] && echo ,)"
  done
  printf '  ]\n}\n'
} >"$out_dir/two_speakers.json"

echo "wrote $out_dir/two_speakers.wav ($(soxi -D "$out_dir/two_speakers.wav") s) and two_speakers.json"
