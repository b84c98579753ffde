"""`download-models push --to s3://VOLUME_ID[/PREFIX] MODEL... | --all | --project NAME`: fill a RunPod network
volume (or any S3-compatible store) through its S3 API, in the layout pods and Serverless workers read."""

from __future__ import annotations

import json
import logging
import sys
import time

import click

from cli import options
from runpod_model_manager.reporting import human_bytes, make_reporter


@click.command()
@options.selection_options
@click.option(
    "--to",
    "destination",
    required=True,
    metavar="s3://VOLUME_ID[/PREFIX]",
    help="The network volume's ID as bucket; PREFIX defaults to models (= /workspace/models on a pod).",
)
@click.option("--datacenter", help="The volume's RunPod datacenter, e.g. EU-RO-1 (endpoint and region).")
@click.option("--endpoint-url", help="Another S3 endpoint (overrides the datacenter's): MinIO, R2, AWS.")
@click.option("--dry-run", is_flag=True, help="Show what would be uploaded (HeadObject only); write nothing.")
@click.option("--frozen", is_flag=True, help="Use only the lock file's commits; fail if it is missing or stale.")
@click.option("--workers", type=click.IntRange(1, 64), help="Objects uploaded at once (default: 8).")
@click.option(
    "--connections", type=click.IntRange(1, 64), help="Parts uploaded at once, all files together (default: 8)."
)
@options.common_options
@options.handle_errors
def command(
    selection,
    destination,
    datacenter,
    endpoint_url,
    dry_run,
    frozen,
    workers,
    connections,
    cache_dir,
    token,
    lock_file,
    json_output,
    quiet,
    verbose,
):
    """Upload models to a network volume through RunPod's S3 API (downloading first what is not complete).

    Credentials come from the standard AWS chain: AWS_ACCESS_KEY_ID (the RunPod S3 API key's access key,
    user_...), AWS_SECRET_ACCESS_KEY (its secret, rps_...), or AWS_PROFILE. They are never printed.
    """
    from runpod_model_manager.push.pusher import Pusher
    from runpod_model_manager.push.settings import PushSettings
    from runpod_model_manager.push.store import Store
    from runpod_model_manager.push.target import parse_target

    if verbose:
        logging.basicConfig(level=logging.INFO)
    target = parse_target(destination, datacenter, endpoint_url)
    tuning = {"workers": workers, "connections": connections}
    settings = PushSettings(**{k: v for k, v in tuning.items() if v})
    reporter = make_reporter(json_output, quiet, verbose)
    specs = selection.specs(reporter, verb="push")
    store = Store(target, settings)
    store.check()  # boto3, credentials and the volume, before anything is downloaded
    cache = options.open_cache(cache_dir, reporter, create=not dry_run)
    manager = options.manager(cache, token, lock_file, frozen, reporter)
    started = time.monotonic()
    pusher = Pusher(manager, store, target, settings)
    try:
        reporter.info(f"target: {target.url()} at {store.endpoint}")
        jobs = pusher.prepare(specs, dry_run=dry_run)
    finally:
        reporter.close()
    if dry_run:
        results = pusher.plan(jobs)
    else:
        uploads = make_reporter(json_output, quiet, verbose, upload=True)
        try:
            results = pusher.run(jobs, uploads)
        finally:
            uploads.close()
    seconds = time.monotonic() - started
    if json_output:
        document = {"target": target.url(), "endpoint": store.endpoint, "dry_run": dry_run, "seconds": seconds}
        click.echo(json.dumps(document | {"models": [r.as_json() for r in results]}, indent=2))
    else:
        _print_results(results, dry_run, quiet, seconds)
    sys.exit(options.EXIT_FAILED if any(r.status == "failed" for r in results) else options.EXIT_OK)


def _print_results(results, dry_run, quiet, seconds):
    ok = [r for r in results if r.status != "failed"]
    failed = [r for r in results if r.status == "failed"]
    if not quiet:
        for r in ok:
            options.emit(_dry_line(r) if dry_run else _line(r))
            for key in r.to_send:
                options.emit(f"    {key}")
    if dry_run:
        options.emit(f"total to send: {human_bytes(sum(r.to_send_bytes for r in ok))}")
    else:
        objects = sum(r.objects for r in ok)
        sent = f"{sum(r.sent_objects for r in ok)} sent ({human_bytes(sum(r.sent_bytes for r in ok))})"
        kept = f"{sum(r.skipped_objects for r in ok)} unchanged ({human_bytes(sum(r.skipped_bytes for r in ok))})"
        models = f"{len(ok)} model{'' if len(ok) == 1 else 's'}"
        options.emit(f"{models}, {objects} objects: {sent}, {kept}, in {seconds:.1f} s")
    for r in failed:
        options.emit(f"FAILED {r.spec}: {r.error}", err=True)
    if failed:
        options.emit(f"{len(failed)} of {len(results)} models failed.", err=True)


def _line(r) -> str:
    downloaded = f", downloaded {human_bytes(r.downloaded_bytes)} first" if r.downloaded_bytes else ""
    if r.status == "unchanged":
        what = f"all {r.objects} objects already there"
    else:
        what = f"{r.sent_objects} of {r.objects} objects sent ({human_bytes(r.sent_bytes)})"
    return f"{r.status:<9} {r.spec} @ {r.commit[:12]}: {what}{downloaded} -> {r.url}"


def _dry_line(r) -> str:
    if r.to_download_bytes or r.url is None:
        return (
            f"would download then push {r.spec}: {human_bytes(r.to_download_bytes)} to download first, "
            f"{human_bytes(r.to_send_bytes)} to send at most"
        )
    return (
        f"would push {r.spec} @ {r.commit[:12]}: {len(r.to_send)} of {r.objects} objects, "
        f"{human_bytes(r.to_send_bytes)} to send -> {r.url}"
    )
