"""RunPod Serverless worker that serves the inference tasks every registered project declares.

Request:  {"input": {"task": "<name>", ...the task's fields}}
Response: the task's result, or {"error": "<one sentence>"} for anything the request got wrong (and for
          internal failures, which are logged with their traceback); the worker keeps serving either way.

On RunPod, a long request reports its progress (which stage, how many of its pieces are done) every
RPMM_PROGRESS_INTERVAL seconds (10), shown by /status while it runs.

Tasks come from `projects.loader.load_projects()`: each project's `tasks` maps a task name to a
"module:function" that takes the job input dict and returns a JSON-able dict. Models load from the
model cache (MODEL_CACHE_DIR, ...) offline, on a task's first request, once per worker.

Audio limits (inference/audio.py, inference/fetch.py): 60 minutes; WAV, FLAC, OGG or MP3; 256 MB from
audio_url, 25 MB in audio_base64. audio_url is http(s) to public addresses only, 3 redirects, 120 s.
HANDLER_ALLOW_PRIVATE_URLS=1 lifts the public-address rule for tests against a local server; never set it on
a deployed worker.

Run as a worker:      python handler.py
Local test API:       python handler.py --rp_serve_api --rp_api_host 127.0.0.1 --rp_api_port 8000
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Callable

from inference import progress
from inference.errors import InputError, ModelUnavailableError
from projects.loader import load_projects
from runpod_model_manager.errors import UserError

log = logging.getLogger("handler")

INTERNAL_ERROR = "The task failed with an internal error; the worker log has the details."
# Where a RunPod worker sends results and progress updates: set on RunPod only.
RUNPOD_RESULTS_URL_ENV = "RUNPOD_WEBHOOK_POST_OUTPUT"


@functools.cache
def available_tasks() -> dict[str, str]:
    """Task name -> "module:function", from every registered project."""
    tasks: dict[str, str] = {}
    for project in load_projects().values():
        for name, target in project.tasks.items():
            if tasks.get(name, target) != target:
                log.warning("task '%s' of project '%s' ignored: another project declares it", name, project.name)
                continue
            tasks[name] = target
    return tasks


@functools.cache
def task_function(target: str) -> Callable[[dict], dict]:
    module_name, _, function_name = target.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def run_task(job_input) -> dict:
    if not isinstance(job_input, dict):
        raise InputError("The job input must be a JSON object.")
    tasks = available_tasks()
    task = job_input.get("task")
    if not isinstance(task, str) or not task:
        raise InputError(f"The input needs a 'task' field: one of {', '.join(sorted(tasks))}.")
    if task not in tasks:
        raise InputError(f"Unknown task '{task}'; available tasks are {', '.join(sorted(tasks))}.")
    return task_function(tasks[task])(job_input)


def progress_updates(job: dict) -> progress.Callback | None:
    """The job's progress as RunPod's progress updates, which its /status shows while the job runs; none off
    RunPod, where nobody polls."""
    if not os.environ.get(RUNPOD_RESULTS_URL_ENV) or not isinstance(job.get("id"), str):
        return None
    from runpod.serverless import progress_update

    return lambda update: progress_update(job, update)


def handler(job: dict) -> dict:
    try:
        with progress.reporting_to(progress_updates(job)):
            return run_task(job.get("input"))
    except (InputError, ModelUnavailableError, UserError) as exc:  # UserError: an RPMM_* setting of the worker
        return {"error": str(exc)}
    except Exception:
        log.exception("task failed")
        return {"error": INTERNAL_ERROR}


if __name__ == "__main__":
    import runpod

    logging.basicConfig(level=logging.INFO)
    log.info("serving tasks: %s", ", ".join(sorted(available_tasks())))
    runpod.serverless.start({"handler": handler})
