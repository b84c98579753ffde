"""`push`: copy complete models from the local cache to an S3-compatible store (a RunPod network volume), in
the same layout, so that pods and Serverless workers mounting the volume find them ready.

target.py (where: bucket, prefix, endpoint) · settings.py (RPMM_PUSH_* tuning) · store.py (the boto3 client,
RunPod's limits) · plan.py (which objects a model maps to) · uploader.py (one object: skip, upload or resume,
verify) · pusher.py (models: download what is missing, push every object, per-model results).
"""
