# syntax=docker/dockerfile:1.10
#
# Two images from one file (BuildKit; docker 23+ uses it by default):
#
#   serverless (default, last stage): a RunPod Serverless worker with the models baked in at /models,
#       read offline by handler.py. Needs models.lock (`python download_models.py lock`) in the context.
#         ./build-serverless.sh --user NAME [--project NAME] [--push]        (see --help)
#         docker build --build-arg PROJECT=speaker_diarization -t NAME/runpod-speaker_diarization:latest .
#       A token for gated/private models is a BuildKit secret, never a build argument:
#         docker build --secret id=hf_token,src=$HOME/.cache/huggingface/token ...
#
#   pod: a Pod image that downloads onto the network volume mounted at /workspace when it starts,
#       skipping what is already complete, then runs the container command (default: stay up for SSH /
#       the web terminal). Set PROJECT=name to fetch one project (default: all); SKIP_MODEL_DOWNLOAD=1 to skip.
#         docker build --target pod -t NAME/runpod-model-manager-pod:latest .
#
# See SERVERLESS_DEPLOYMENT.md and DEPLOYMENT.md.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Dependencies only (from pyproject.toml), so that editing the code does not reinstall them.
FROM python-base AS deps-core
WORKDIR /src
COPY pyproject.toml ./
RUN python -m venv /opt/venv \
 && python -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + [d for x in sys.argv[1:] for d in p["optional-dependencies"][x]]))' \
    > /tmp/requirements-core.txt \
 && pip install --no-cache-dir -r /tmp/requirements-core.txt

FROM deps-core AS deps-serverless
RUN python -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join([d for x in sys.argv[1:] for d in p["optional-dependencies"][x]]))' serverless \
    > /tmp/requirements-serverless.txt \
 && pip install --no-cache-dir -r /tmp/requirements-serverless.txt

# ---------------------------------------------------------------------------------------------------
# Serverless build stage 1: the models. Only the downloader's code and models.lock are copied in, so
# editing handler.py or inference/ does not download the models again.
FROM deps-core AS models
WORKDIR /src
COPY download_models.py modelscope_patch.py models.lock ./
COPY cli/ cli/
COPY runpod_model_manager/ runpod_model_manager/
COPY downloaders/ downloaders/
COPY projects/ projects/
ARG PROJECT=speaker_diarization
# --frozen: only the commits pinned in models.lock, no resolution request; fails if the lock is stale.
# Tokens come from optional BuildKit secrets (env for this RUN only; never in a layer or the history).
RUN --mount=type=secret,id=hf_token,env=HF_TOKEN \
    --mount=type=secret,id=ms_token,env=MODELSCOPE_API_TOKEN \
    python download_models.py --project "${PROJECT}" --frozen --cache-dir /models
# The runtime runs as a non-root user: every model file must be world-readable (some are written 0600).
RUN chmod -R a+rX /models

# Serverless build stage 2: the virtual environment with the inference stack and this package.
FROM deps-serverless AS serverless-venv
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir --no-deps .

# ---------------------------------------------------------------------------------------------------
# Pod image: downloads onto the mounted network volume at start.
FROM deps-core AS pod
WORKDIR /opt/runpod-model-manager
COPY . .
RUN pip install --no-cache-dir --no-deps .
ENV MODEL_CACHE_DIR=/workspace/models \
    HF_HOME=/workspace/models/huggingface \
    MODELSCOPE_CACHE=/workspace/models/modelscope
COPY --chmod=755 <<'EOF' /usr/local/bin/pod-entrypoint
#!/bin/sh
# Download the models onto the volume (complete ones are skipped), then run the container command.
set -eu
if [ "${SKIP_MODEL_DOWNLOAD:-0}" = "1" ]; then
    echo "pod-entrypoint: SKIP_MODEL_DOWNLOAD=1, not downloading"
else
    if ! python -c 'import os, sys; sys.exit(not os.path.ismount("/workspace"))'; then
        echo "pod-entrypoint: warning: /workspace is not a mounted volume; models go to the container disk" >&2
    fi
    if [ -n "${PROJECT:-}" ]; then
        download-models --project "$PROJECT"
    else
        download-models --all
    fi || echo "pod-entrypoint: warning: model download failed (exit $?); run download-models again from a shell" >&2
fi
if [ "$#" -eq 0 ]; then
    echo "pod-entrypoint: no command given; staying up (models in ${MODEL_CACHE_DIR:-/workspace/models})"
    sleep infinity &
    pid=$!
    trap 'kill "$pid" 2>/dev/null; exit 0' TERM INT
    wait "$pid"
    exit 0
fi
exec "$@"
EOF

ENTRYPOINT ["/usr/local/bin/pod-entrypoint"]

# ---------------------------------------------------------------------------------------------------
# Serverless runtime (default target): slim Python, the venv, the models, the handler; no build tools.
FROM python-base AS serverless
RUN groupadd --system --gid 10001 worker \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/worker --shell /usr/sbin/nologin worker
COPY --from=serverless-venv /opt/venv /opt/venv
COPY --from=models /models /models
WORKDIR /app
COPY handler.py ./
COPY inference/ inference/
ENV MODEL_CACHE_DIR=/models \
    HF_HOME=/models/huggingface \
    MODELSCOPE_CACHE=/models/modelscope \
    HF_HUB_OFFLINE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
CMD ["python", "-u", "handler.py"]
