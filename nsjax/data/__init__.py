"""Input pipelines on grain: labeled and unlabeled sources (`.npz`, image folders, ArrayRecord
shards), decoding and crops on the host, per-process sharding, fixed-shape uint8 batches with
an exact-resume state, and a report of every record skipped or converted.

- Sources: `NpzSource`, `ImageFolderSource`, `ShardSource` (written by `write_shards` or
  `nsjax convert`).
- Pixels: `decode_image`, `image_size`, `BadImage`, `TrainCrop` (Inception, pad or
  centre crop + flip), `EvalCrop` (centre crop), `sample_inception_box`.
- Pipelines: `train_pipeline`, `eval_pipeline`, `student_pipeline` (labeled + unlabeled at a
  fixed ratio), all returning `Batches` (`get_state`/`set_state`, `reports`); `fit_inputs`
  gives `nsjax.train.fit` its inputs from sources; `Subset` is some records of a source.
"""

from nsjax.data._crops import EvalCrop, TrainCrop, sample_inception_box
from nsjax.data._decode import BadImage, decode_image, image_size
from nsjax.data._pipeline import (
    Batches,
    eval_pipeline,
    fit_inputs,
    student_pipeline,
    train_pipeline,
)
from nsjax.data._report import DataReport
from nsjax.data._shards import ShardSource, write_shards
from nsjax.data._sources import ImageFolderSource, NpzSource, Record, Source, Subset

__all__ = [
    "BadImage", "Batches", "DataReport", "EvalCrop", "ImageFolderSource", "NpzSource", "Record",
    "ShardSource", "Source", "Subset", "TrainCrop", "decode_image", "eval_pipeline",
    "fit_inputs", "image_size", "sample_inception_box", "student_pipeline", "train_pipeline",
    "write_shards",
]  # fmt: skip
