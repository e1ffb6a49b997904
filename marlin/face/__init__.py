"""Face pipeline for video: detection, landmarks, tracking, region maps, crops, paste-back.

Everything runs offline: mediapipe's detector and 478-point mesh ship in its wheel (imported
only when a mediapipe detector first runs), OpenCV's Haar cascade ships with OpenCV, and the
optional face-alignment backend only loads weight files already in the torch hub cache.

Typical use::

    from marlin.face import FaceDetector, marlin_crop, track_video
    with FaceDetector(video=True) as det:
        for frame, tr in track_video("talk.mp4", detector=det):
            if tr.found:
                crop, cmap = marlin_crop(frame.image, tr.box)
"""

from .blend import BLEND_REGIONS, blend_mask, match_color, paste_back
from .crops import CropMap, crop_region, marlin_crop, marlin_region, wav2lip_crop, wav2lip_region
from .detect import FAN_WEIGHT_FILES, DetectorConfig, Face, FaceBackendError, FaceDetector, available_backends
from .regions import (
    N_REGIONS,
    REGION_COLORS,
    REGIONS,
    colorize_labels,
    face_outline,
    mouth_outline,
    overlay,
    patch_regions,
    region_labels,
    region_polygons,
)
from .stream import iter_marlin_crops, track_video
from .track import (
    FaceTracker,
    Track,
    TrackConfig,
    select_face,
    smooth_series,
    track,
    track_faces,
)

__all__ = [
    "BLEND_REGIONS",
    "FAN_WEIGHT_FILES",
    "N_REGIONS",
    "REGIONS",
    "REGION_COLORS",
    "CropMap",
    "DetectorConfig",
    "Face",
    "FaceBackendError",
    "FaceDetector",
    "FaceTracker",
    "Track",
    "TrackConfig",
    "available_backends",
    "blend_mask",
    "colorize_labels",
    "crop_region",
    "face_outline",
    "iter_marlin_crops",
    "marlin_crop",
    "marlin_region",
    "match_color",
    "mouth_outline",
    "overlay",
    "paste_back",
    "patch_regions",
    "region_labels",
    "region_polygons",
    "select_face",
    "smooth_series",
    "track",
    "track_faces",
    "track_video",
    "wav2lip_crop",
    "wav2lip_region",
]
