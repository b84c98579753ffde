"""Speaker diarization and voice activity detection.

handler.py serves two tasks from this project with torch-free inference (inference/tasks.py):
Silero VAD on onnxruntime for `vad`; pyannote's segmentation-3.0 and Resemblyzer's voice encoder, both
ported to numpy, plus clustering for `speaker_diarization`.
"""

from projects.base import BaseProject, huggingface, modelscope

# Silero VAD's own `silero_vad.onnx` (v5 interface: input, state, sr), as published in
# snakers4/silero-vad's src/silero_vad/data and mirrored unchanged here.
SILERO_VAD = huggingface("deepghs/silero-vad-onnx", include=("silero_vad.onnx",))
SILERO_VAD_FILE = "silero_vad.onnx"

# pyannote's speaker segmentation model (MIT): the PyTorch Lightning checkpoint the numpy port reads
# (sha256 da85c298...29298, commit e66f3d3b). The repository is gated: accept its conditions on Hugging
# Face and set HF_TOKEN before downloading.
SEGMENTATION = huggingface("pyannote/segmentation-3.0", include=("pytorch_model.bin",))
SEGMENTATION_FILE = "pytorch_model.bin"

# Resemblyzer's pretrained GE2E voice encoder (`resemblyzer/pretrained.pt`, sha256 39373b86...f134e).
VOICE_ENCODER = huggingface("Gaphy/EmoCorrector", include=("resemblyzer/pretrained.pt",))
VOICE_ENCODER_FILE = "resemblyzer/pretrained.pt"

# The FunASR pipeline (CAM++ diarization, FSMN VAD, CAM++ speaker verification); handler.py does not
# use these: they are for users who run the FunASR stack (funasr + torch) on the same cache.
FUNASR_MODELS = (
    modelscope("iic/speech_campplus_speaker-diarization_common"),
    modelscope("damo/speech_fsmn_vad_zh-cn-16k-common-pytorch"),
    modelscope("damo/speech_campplus_sv_zh-cn_16k-common"),
    modelscope("damo/speech_campplus-transformer_scl_zh-cn_16k-common"),
)


class SpeakerDiarization(BaseProject):
    """Who spoke when. `vad` uses SILERO_VAD, `speaker_diarization` SEGMENTATION and VOICE_ENCODER; the four
    ModelScope FunASR models are downloaded for users with the FunASR stack."""

    name = "speaker_diarization"
    description = (
        "Silero VAD, pyannote segmentation + Resemblyzer speaker diarization (served by handler.py), and FunASR models"
    )
    models = (SILERO_VAD, SEGMENTATION, VOICE_ENCODER, *FUNASR_MODELS)
    tasks = {
        "vad": "inference.tasks:vad",
        "speaker_diarization": "inference.tasks:speaker_diarization",
    }
