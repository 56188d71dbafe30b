"""Input pipelines on grain: labeled and unlabeled sources (`.npz`, image folders, ArrayRecord
shards), decoding and crops on the host, per-process sharding, fixed-shape uint8 batches with
an exact-resume state, and a report of every record skipped or converted.

- Sources: `NpzSource`, `ImageFolderSource`, `ShardSource` (written by `write_shards` or
  `nsjax convert`).
- Pixels: `decode_image`, `image_size`, `BadImage`, `TrainCrop` (Inception crop + flip),
  `EvalCrop` (centre crop), `sample_inception_box`.
- Pipelines: `train_pipeline`, `eval_pipeline`, `student_pipeline` (labeled + unlabeled at a
  fixed ratio), all returning `Batches` (`get_state`/`set_state`, `reports`).
"""

from nsjax.data._crops import EvalCrop, TrainCrop, sample_inception_box
from nsjax.data._decode import BadImage, decode_image, image_size
from nsjax.data._pipeline import Batches, eval_pipeline, student_pipeline, train_pipeline
from nsjax.data._report import DataReport
from nsjax.data._shards import ShardSource, write_shards
from nsjax.data._sources import ImageFolderSource, NpzSource, Record, Source

__all__ = [
    "BadImage", "Batches", "DataReport", "EvalCrop", "ImageFolderSource", "NpzSource", "Record",
    "ShardSource", "Source", "TrainCrop", "decode_image", "eval_pipeline", "image_size",
    "sample_inception_box", "student_pipeline", "train_pipeline", "write_shards",
]  # fmt: skip
