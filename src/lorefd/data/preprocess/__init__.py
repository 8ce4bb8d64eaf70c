"""Face preprocessing for ``lorefd preprocess`` (Section IV-B of the paper).

Videos are sampled into frames (:mod:`.frames`), the face of each frame is found and tracked
(:mod:`.faces`), aligned to a 5-point template and cropped (:mod:`.align`); dataset layouts are
indexed by :mod:`.adapters` and :mod:`.runner` runs everything resumably across processes.
"""

from lorefd.data.preprocess.adapters import ADAPTERS, DatasetIndex, MediaItem, index_dataset
from lorefd.data.preprocess.align import align_face, five_point_template
from lorefd.data.preprocess.frames import VideoError, probe_video, read_frames, sample_indices
from lorefd.data.preprocess.runner import PreprocessOptions, RunSummary, run_preprocess

__all__ = [
    "ADAPTERS", "DatasetIndex", "MediaItem", "PreprocessOptions", "RunSummary", "VideoError",
    "align_face", "five_point_template", "index_dataset", "probe_video", "read_frames",
    "run_preprocess", "sample_indices",
]
