"""Speaker diarization and voice activity detection.

handler.py serves two tasks from this project with torch-free inference (inference/tasks.py): pyannote's
segmentation-3.0 (ported to numpy) finds the speech for `vad`; with 3D-Speaker's CAM++ speaker embeddings
(ported to numpy) and clustering it does `speaker_diarization`.
"""

from projects.base import BaseProject, huggingface, modelscope

# pyannote's speaker segmentation model (MIT): the PyTorch Lightning checkpoint the numpy port reads
# (sha256 da85c298...29298, commit e66f3d3b). The repository is gated: accept its conditions on Hugging
# Face and set HF_TOKEN before downloading.
SEGMENTATION = huggingface("pyannote/segmentation-3.0", include=("pytorch_model.bin",))
SEGMENTATION_FILE = "pytorch_model.bin"

# 3D-Speaker's CAM++ speaker embedding model (Apache-2.0), trained on 200k Chinese and English speakers: the
# state dict the numpy port reads (sha256 92f29b94...840199), published by Alibaba's Tongyi lab (iic).
SPEAKER_EMBEDDING = modelscope(
    "iic/speech_campplus_sv_zh_en_16k-common_advanced", include=("campplus_cn_en_common.pt",)
)
SPEAKER_EMBEDDING_FILE = "campplus_cn_en_common.pt"

# The FunASR pipeline (CAM++ diarization, FSMN VAD, CAM++ speaker verification); handler.py does not
# use these: they are for users who run the FunASR stack (funasr + torch) on the same cache.
FUNASR_MODELS = (
    modelscope("iic/speech_campplus_speaker-diarization_common"),
    modelscope("damo/speech_fsmn_vad_zh-cn-16k-common-pytorch"),
    modelscope("damo/speech_campplus_sv_zh-cn_16k-common"),
    modelscope("damo/speech_campplus-transformer_scl_zh-cn_16k-common"),
)


class SpeakerDiarization(BaseProject):
    """Who spoke when. `vad` uses SEGMENTATION, `speaker_diarization` SEGMENTATION and SPEAKER_EMBEDDING; the
    four ModelScope FunASR models are downloaded for users with the FunASR stack."""

    name = "speaker_diarization"
    description = (
        "pyannote segmentation VAD, segmentation + CAM++ speaker diarization (served by handler.py), and FunASR models"
    )
    models = (SEGMENTATION, SPEAKER_EMBEDDING, *FUNASR_MODELS)
    tasks = {
        "vad": "inference.tasks:vad",
        "speaker_diarization": "inference.tasks:speaker_diarization",
    }
