"""A trained EfficientNet frozen as a teacher: an eval-mode module, exported to and loaded from
one self-describing file.

An export is a single uncompressed zip file (any name; `.zip` is a good suffix) holding:

- `teacher.json`: `{"format": "nsjax-teacher", "version": 1, "num_classes": C,
  "config": <the EfficientNetConfig as a dict, blocks as a list of BlockArgs dicts>,
  "metadata": <the caller's dict>}`;
- `weights.eqx`: `(model, state)` written by `eqx.tree_serialise_leaves` (the weights and the
  BN running statistics).

It is written into a temporary file next to `path` and renamed over it (`os.replace`), so
`path` always holds either the previous file or the complete new one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile

import equinox as eqx
import jax
from jax import Array

from nsjax import _checks
from nsjax._io import atomic_write
from nsjax.models import BlockArgs, EfficientNet, EfficientNetConfig, efficientnet_from_config
from nsjax.models._efficientnet import _check_state

__all__ = ["Teacher", "export_teacher", "load_teacher", "teacher_metadata"]

_FORMAT, _VERSION = "nsjax-teacher", 1
_HEADER, _WEIGHTS = "teacher.json", "weights.eqx"


class Teacher(eqx.Module):
    """A trained EfficientNet run in eval mode: BN with its running statistics, no noise.

    **Arguments:**

    - `model`: an `nsjax.models.EfficientNet`.
    - `state`: its `eqx.nn.State` (the BN running statistics).

    Call: `teacher(images) -> logits` (see `__call__`); jit it with `eqx.filter_jit`.
    """

    model: EfficientNet
    state: eqx.nn.State

    def __check_init__(self):
        if not isinstance(self.model, EfficientNet):
            raise TypeError(f"model must be an EfficientNet, got {type(self.model).__name__}")
        if not isinstance(self.state, eqx.nn.State):
            raise TypeError(f"state must be an eqx.nn.State, got {type(self.state).__name__}")

    @property
    def num_classes(self) -> int:
        """`C`, the number of logits."""
        return self.model.num_classes

    @property
    def resolution(self) -> int:
        """The image side the teacher is evaluated at, `model.config.test_resolution`."""
        return self.model.config.test_resolution

    def __call__(self, images: Array) -> Array:
        """Eval-mode logits.

        **Arguments:** `images`: float `[B, H, W, 3]`, `H, W >= 32`, already normalised.

        **Returns:** float32 `[B, num_classes]`.
        """
        _checks.check_images("images", images, dtypes=("floating",), min_side=32)
        return self.model(images, self.state, train=False)[0]


def export_teacher(path: str | os.PathLike, model: EfficientNet, state: eqx.nn.State, *,
                   metadata: dict | None = None) -> None:  # fmt: skip
    """Write a model and its BN state as a teacher file (atomically, see the module doc).

    Arrays must be fully addressable (call it from one process, with arrays on its devices).

    **Arguments:**

    - `path`: the file to write (replaced if it exists).
    - `model`: an `nsjax.models.EfficientNet`.
    - `state`: its `eqx.nn.State`.
    - `metadata`: a JSON-able dict stored as is (e.g. the run, the accuracy), or None.
    """
    path = _check_path(path)
    teacher = Teacher(model, state)
    _check_state(model, state)
    header = {"format": _FORMAT, "version": _VERSION, "num_classes": teacher.num_classes,
              "config": dataclasses.asdict(model.config),
              "metadata": _checks.check_json_dict("metadata", {} if metadata is None
                                                  else metadata)}  # fmt: skip

    def write(f) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
            z.writestr(_HEADER, json.dumps(header, indent=1, sort_keys=True))
            with z.open(_WEIGHTS, "w") as w:
                eqx.tree_serialise_leaves(w, (teacher.model, teacher.state))

    atomic_write(path, write)


def teacher_metadata(path: str | os.PathLike) -> dict:
    """The header of a teacher file, without reading the weights.

    **Arguments:** `path`: a file written by `export_teacher`.

    **Returns:** a dict with `format`, `version`, `num_classes`, `config` (as a dict) and
    `metadata` (the dict given to `export_teacher`).
    """
    path = _check_path(path)
    with _open(path) as z:
        return _header(path, z)


def load_teacher(path: str | os.PathLike, *, num_classes: int | None = None,
                 config: EfficientNetConfig | None = None) -> Teacher:  # fmt: skip
    """Read a teacher file; the architecture is rebuilt from its header (without running the
    initialiser) and checked against what the caller expects before any weight is read.

    **Arguments:**

    - `path`: a file written by `export_teacher`.
    - `num_classes`: int >= 1, the expected number of classes, or None to accept the file's.
    - `config`: the expected `EfficientNetConfig`, or None to accept the file's.

    **Returns:** a `Teacher`, its arrays on the default device.

    **Raises:** `FileNotFoundError` for a missing file; `ValueError` naming `path` for a file
    that is not a teacher export or is corrupt, for another class count than `num_classes`
    (both counts named) or another architecture than `config` (the first differing field
    named).
    """
    path = _check_path(path)
    if num_classes is not None:
        num_classes = _checks.check_positive_int("num_classes", num_classes)
    if config is not None and not isinstance(config, EfficientNetConfig):
        raise TypeError(f"config must be an EfficientNetConfig or None, got "
                        f"{type(config).__name__}")  # fmt: skip
    with _open(path) as z:
        header = _header(path, z)
        saved_config = _config_from_dict(path, header["config"])
        if num_classes is not None and num_classes != header["num_classes"]:
            raise ValueError(f"{path} holds a teacher with {header['num_classes']} classes, "
                             f"but num_classes={num_classes} was asked for")  # fmt: skip
        if config is not None and (diff := _first_difference(saved_config, config, "config")):
            raise ValueError(f"{path} holds another architecture than config: {diff}")
        like = eqx.filter_eval_shape(efficientnet_from_config, saved_config, key=jax.random.key(0),
                                     num_classes=header["num_classes"])  # fmt: skip
        model, state = _read_weights(path, z, like)
    return Teacher(model, state)


def _check_path(path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return os.fspath(path)



def _open(path: str) -> zipfile.ZipFile:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no teacher file at {path}")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path} is not a teacher file written by export_teacher: {e}") from e


def _header(path: str, z: zipfile.ZipFile) -> dict:
    """The checked `teacher.json` of an open teacher file."""
    try:
        header = json.loads(z.read(_HEADER))
    except (KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a teacher file written by export_teacher "
                         f"(unreadable {_HEADER}: {e})") from e  # fmt: skip
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a teacher file written by export_teacher "
                         f"({_HEADER} has no format {_FORMAT!r})")  # fmt: skip
    if header.get("version") != _VERSION:
        raise ValueError(f"{path} has teacher format version {header.get('version')!r}; "
                         f"this nsjax reads version {_VERSION}")  # fmt: skip
    return header


def _config_from_dict(path: str, fields) -> EfficientNetConfig:
    """The `EfficientNetConfig` a header stores (inverse of `dataclasses.asdict`)."""
    try:
        blocks = tuple(BlockArgs(**b) for b in fields["blocks"])
        return EfficientNetConfig(**{**fields, "blocks": blocks})
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} has an invalid architecture in {_HEADER}: {e}") from e


def _first_difference(saved, expected, where: str) -> str | None:
    """The first field (in declaration order, into `blocks`) where two configs differ, as
    `"config.blocks[2].kernel: 5 in the file, 3 expected"`; None when they are equal."""
    if dataclasses.is_dataclass(saved) and type(saved) is type(expected):
        for f in dataclasses.fields(saved):
            diff = _first_difference(getattr(saved, f.name), getattr(expected, f.name),
                                     f"{where}.{f.name}")  # fmt: skip
            if diff:
                return diff
        return None
    if isinstance(saved, tuple) and isinstance(expected, tuple):
        if len(saved) != len(expected):
            return f"{where}: {len(saved)} entries in the file, {len(expected)} expected"
        for i, (a, b) in enumerate(zip(saved, expected)):
            if diff := _first_difference(a, b, f"{where}[{i}]"):
                return diff
        return None
    return None if saved == expected else f"{where}: {saved!r} in the file, {expected!r} expected"


def _read_weights(path: str, z: zipfile.ZipFile, like):
    """`(model, state)` from the weights stream, which must hold exactly `like`'s leaves."""
    try:
        with z.open(_WEIGHTS) as f:
            weights = eqx.tree_deserialise_leaves(f, like)
            extra = f.read(1)
    except (KeyError, OSError, EOFError, ValueError, RuntimeError, zipfile.BadZipFile) as e:
        root = e
        while root.__cause__ is not None:  # equinox wraps the reader's error per tree level
            root = root.__cause__
        raise ValueError(f"{path} has corrupt or mismatched weights: {e}"
                         + ("" if root is e else f" ({type(root).__name__}: {root})")) from e
    if extra:
        raise ValueError(f"{path} has corrupt weights: more data than its architecture holds")
    return weights
