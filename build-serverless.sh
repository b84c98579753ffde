#!/usr/bin/env bash
# Build (and optionally push) the RunPod Serverless image of one project, its models baked in.
# Run with --help for the options. Non-interactive; never prints a token.
set -euo pipefail

prog=$(basename "$0")
root=$(cd "$(dirname "$0")" && pwd)

usage() {
    cat <<EOF
Usage: $prog [options] [DOCKERHUB_USER]

Build the RunPod Serverless image of a project with its models baked in at /models, downloaded
with the commits pinned in models.lock (create it first: python download_models.py lock).

The image is named  <user>/runpod-<project>:<tag>
  e.g.  $prog alice                     ->  alice/runpod-speaker_diarization:latest

Options:
  -u, --user NAME, --image NAME
                         Docker Hub user or registry namespace (e.g. ghcr.io/alice); required,
                         also accepted as the only positional argument
  -t, --tag TAG          image tag (default: latest)
  -p, --project NAME     project whose models go into the image (default: speaker_diarization)
      --platform P       target platform (default: linux/amd64, what RunPod runs)
      --push             push the image after building it
      --hf-token-file PATH
                         file holding a Hugging Face token for gated/private models; passed to the
                         build as the BuildKit secret 'hf_token' (never a build argument, never printed)
      --ms-token-file PATH
                         the same for ModelScope (BuildKit secret 'ms_token')
  -n, --dry-run          print the docker commands and run nothing
  -h, --help             show this help and exit

Exit status: 0 done, 1 a command failed or something is missing, 2 bad usage.
EOF
}

die_usage() {
    echo "$prog: $1" >&2
    echo "Try '$prog --help'." >&2
    exit 2
}

die() {
    echo "$prog: error: $1" >&2
    exit 1
}

user=""
tag="latest"
project="speaker_diarization"
platform="linux/amd64"
push=0
dry_run=0
hf_token_file=""
ms_token_file=""
positional=()

set_user() {
    if [[ -n "$user" && "$user" != "$1" ]]; then
        die_usage "the image user is given twice ('$user' and '$1')"
    fi
    user=$1
}

# Value of an option given as '--opt VALUE' or '--opt=VALUE'; sets $value and $shift_by.
take_value() {
    local opt=$1 next_present=$2 next=${3-}
    if [[ "$opt" == *=* ]]; then
        value=${opt#*=}
        shift_by=1
    elif [[ "$next_present" == 1 ]]; then
        value=$next
        shift_by=2
    else
        die_usage "option '$opt' needs a value"
    fi
    if [[ -z "$value" ]]; then
        die_usage "option '${opt%%=*}' needs a non-empty value"
    fi
}

while [[ $# -gt 0 ]]; do
    arg=$1
    has_next=0
    if [[ $# -gt 1 ]]; then has_next=1; fi
    case "$arg" in
        -h | --help)
            usage
            exit 0
            ;;
        -u | --user | --user=* | --image | --image=*)
            take_value "$arg" "$has_next" "${2-}"
            set_user "$value"
            shift "$shift_by"
            ;;
        -t | --tag | --tag=*)
            take_value "$arg" "$has_next" "${2-}"
            tag=$value
            shift "$shift_by"
            ;;
        -p | --project | --project=*)
            take_value "$arg" "$has_next" "${2-}"
            project=$value
            shift "$shift_by"
            ;;
        --platform | --platform=*)
            take_value "$arg" "$has_next" "${2-}"
            platform=$value
            shift "$shift_by"
            ;;
        --hf-token-file | --hf-token-file=*)
            take_value "$arg" "$has_next" "${2-}"
            hf_token_file=$value
            shift "$shift_by"
            ;;
        --ms-token-file | --ms-token-file=*)
            take_value "$arg" "$has_next" "${2-}"
            ms_token_file=$value
            shift "$shift_by"
            ;;
        --push)
            push=1
            shift
            ;;
        -n | --dry-run)
            dry_run=1
            shift
            ;;
        --)
            shift
            break
            ;;
        -*)
            die_usage "unknown option '$arg'"
            ;;
        *)
            positional+=("$arg")
            shift
            ;;
    esac
done
positional+=("$@")
if [[ ${#positional[@]} -gt 1 ]]; then
    die_usage "too many arguments (${positional[*]}): only one DOCKERHUB_USER is accepted"
elif [[ ${#positional[@]} -eq 1 ]]; then
    set_user "${positional[0]}"
fi

# -- validation ---------------------------------------------------------------------------------------
name_part='[a-z0-9]+([._-]+[a-z0-9]+)*'
if [[ -z "$user" ]]; then
    die_usage "no image user: give DOCKERHUB_USER or --user NAME"
fi
if ! [[ "$user" =~ ^${name_part}(:[0-9]+)?(/${name_part})*$ ]]; then
    die_usage "'$user' is not a valid image user/namespace (lowercase letters, digits, '.', '_', '-', '/')"
fi
if ! [[ "$project" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]]; then
    die_usage "'$project' is not a valid project name"
fi
if ! [[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
    die_usage "'$tag' is not a valid image tag"
fi
if ! [[ "$platform" =~ ^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$ ]]; then
    die_usage "'$platform' is not a valid platform (e.g. linux/amd64)"
fi

absolute() {
    # An existing, readable file as an absolute path (the daemon's client reads it, not us).
    local path=$1 opt=$2
    if [[ ! -f "$path" || ! -r "$path" ]]; then
        die "$opt: '$path' is not a readable file"
    fi
    echo "$(cd "$(dirname "$path")" && pwd)/$(basename "$path")"
}
if [[ -n "$hf_token_file" ]]; then hf_token_file=$(absolute "$hf_token_file" --hf-token-file); fi
if [[ -n "$ms_token_file" ]]; then ms_token_file=$(absolute "$ms_token_file" --ms-token-file); fi

project_lc=$(printf '%s' "$project" | tr '[:upper:]' '[:lower:]')
image="${user}/runpod-${project_lc}:${tag}"

if [[ "$dry_run" == 0 ]] && ! command -v docker >/dev/null 2>&1; then
    die "docker not found: install Docker (with BuildKit) or use --dry-run to print the commands"
fi
if [[ ! -f "$root/models.lock" ]]; then
    msg="$root/models.lock not found: create it with 'python download_models.py lock --project $project'"
    if [[ "$dry_run" == 1 ]]; then
        echo "$prog: warning: $msg" >&2
    else
        die "$msg"
    fi
fi

# -- commands -----------------------------------------------------------------------------------------
build_cmd=(docker build --platform "$platform" --target serverless --build-arg "PROJECT=$project")
if [[ -n "$hf_token_file" ]]; then build_cmd+=(--secret "id=hf_token,src=$hf_token_file"); fi
if [[ -n "$ms_token_file" ]]; then build_cmd+=(--secret "id=ms_token,src=$ms_token_file"); fi
build_cmd+=(--tag "$image" "$root")
push_cmd=(docker push "$image")

# Print a command as one shell-quoted line (words of safe characters are left bare).
show() {
    local word line=""
    for word in "$@"; do
        if [[ ! "$word" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
            word="'${word//\'/\'\\\'\'}'"
        fi
        line+="${line:+ }$word"
    done
    echo "$line"
}

if [[ "$dry_run" == 1 ]]; then
    show "${build_cmd[@]}"
    if [[ "$push" == 1 ]]; then show "${push_cmd[@]}"; fi
    exit 0
fi

export DOCKER_BUILDKIT=1 # secret mounts, heredocs and COPY --chmod need BuildKit (the default since Docker 23)

echo "+ $(show "${build_cmd[@]}")" >&2
"${build_cmd[@]}"
if [[ "$push" == 1 ]]; then
    echo "+ $(show "${push_cmd[@]}")" >&2
    "${push_cmd[@]}"
    echo "pushed $image" >&2
else
    echo "built $image (push it with --push, or: docker push $image)" >&2
fi
