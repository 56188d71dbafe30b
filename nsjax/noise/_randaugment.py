"""RandAugment as Noisy Student runs it (`randaugment.py` of google-research/noisystudent),
batched: every image of a batch draws its own op in every layer.

The policy (op list, level rules, fill, always-apply) is the official code's; each op is
computed as PIL computes it by default, or as the TF code computes it with `tf_compat=True`
(see `nsjax.noise.ops`).

Two executors give bit-identical results (tested):

- per image (CPU): a loop over the images, each running only its own ops through a
  `lax.switch`, so an image costs one op per layer. XLA:CPU runs gathers on one thread and a
  branch-free batch would compute every op for every image.
- batched (GPU, TPU): per layer, one nearest-neighbour warp with a per-image affine map
  (identity unless the op is geometric; Cutout's box is filled in the same pass), one per-image
  per-channel 256-entry lookup table (identity unless a point op, Brightness or Contrast), one
  blend toward a per-image degenerate image (grayscale for Color, smoothed for Sharpness,
  factor 1 otherwise). Stages that no op in `ops` needs are left out at trace time.

`randaugment(..., executor="auto")` lets `lax.platform_dependent` pick the executor when the
computation is lowered (per image on CPU, batched elsewhere); "per_image" and "batched" force one.

The level-to-argument rule lives in one place, `_level_rule`, evaluated in float64 NumPy as the
reference's Python code evaluates it: at the Python magnitude for a fixed magnitude, and on a
grid of multiples of 1/128 for sampled magnitudes (`magnitude_std > 0`), whose per-image values
are rounded to that grid and looked up. A sampled magnitude `m` is therefore mapped exactly as
`randaugment(..., magnitude=float(m))` maps it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nsjax import _checks
from nsjax.noise import _image, _kernels, _pil_geometry, _tf_geometry

__all__ = ["DEFAULT_OPS", "EXECUTORS", "random_cutout", "randaugment", "randaugment_ops",
           "relative_constants", "svhn_augment"]

DEFAULT_OPS: tuple[str, ...] = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "SolarizeAdd",
    "Cutout",
)
"""The 16 ops of the official Noisy Student code (`cutout_op=True`), in its index order."""

EXECUTORS: tuple[str, ...] = ("auto", "per_image", "batched")
"""`randaugment`'s `executor` choices: "auto" runs "per_image" on CPU and "batched" elsewhere
(chosen by `jax.lax.platform_dependent` when the computation is lowered); all are bit-identical."""

_MAX_LEVEL = 10.0
_MAX_MAGNITUDE = 1000.0
_MAX_CONSTANT = 1e6
_GRID = 128  # sampled magnitudes are rounded to multiples of 1 / _GRID (exact in float32)
_STD_REACH = 8.0  # the table of a sampled magnitude covers magnitude + 8 std
_REFERENCE_SIDE = 224  # the resolution the reference constants (100 px, 40 px) were set for
_REFERENCE_TRANSLATE, _REFERENCE_CUTOUT = 100, 40
_GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
_LUT_OPS = ("AutoContrast", "Equalize", "Invert", "Posterize", "Solarize", "SolarizeAdd",
            "Brightness", "Contrast")
_BLEND_OPS = ("Color", "Sharpness")
_ENHANCE = ("Color", "Contrast", "Brightness", "Sharpness")
_KERNEL_OF_OP = {
    **{name: "warp" for name in _GEOMETRIC},
    "Cutout": "cutout", "AutoContrast": "auto_contrast", "Equalize": "equalize",
    "Invert": "invert", "Posterize": "posterize", "Solarize": "solarize",
    "SolarizeAdd": "solarize_add", "Color": "color", "Contrast": "contrast",
    "Brightness": "brightness", "Sharpness": "sharpness",
}
_SOLARIZE_ADD_THRESHOLD = 128


class _Config(NamedTuple):
    ops: tuple[str, ...]
    height: int
    width: int
    fill: int
    translate_const: float
    cutout_const: float
    tf_compat: bool


class _Params(NamedTuple):
    """Per-image arguments of one layer, each with a leading `[B]` axis."""

    kernel: jax.Array  # int32: index into the executor's kernel list
    op: jax.Array  # int32: index into cfg.ops
    matrix: jax.Array  # [B, 2, 3] map for `_image.warp` (int32 PIL, float32 tf_compat)
    box: jax.Array  # int32 [B, 4]: Cutout's (y0, y1, x0, x1), empty otherwise
    factor: jax.Array  # float32: enhance factor, 1 otherwise
    shift: jax.Array  # int32: Posterize shift
    threshold: jax.Array  # int32: Solarize threshold
    addition: jax.Array  # int32: SolarizeAdd addition


# --------------------------------------------------------------------------- argument checks


def _number(name: str, value: Any, *, maximum: float) -> float:
    """A concrete number in [0, maximum] (NumPy scalars and 0-d arrays accepted)."""
    return _checks.check_number(name, value, minimum=0.0, maximum=maximum)


def _check_ops(ops: Any) -> tuple[str, ...]:
    if isinstance(ops, str) or not isinstance(ops, Sequence):
        raise TypeError(f"ops must be a tuple of op names, got {type(ops).__name__}")
    ops = tuple(ops)
    if not ops:
        raise ValueError(f"ops must name at least one op of {DEFAULT_OPS}, got ()")
    for name in ops:
        if name not in DEFAULT_OPS:
            raise ValueError(f"ops must hold names from {DEFAULT_OPS}, got {name!r}")
    return ops


# --------------------------------------------------------------------------- the level rule


def _level_rule(magnitude: Any, translate_const: float, cutout_const: float
                ) -> dict[str, np.ndarray]:
    """The reference's level-to-argument rule, the only place it is written.

    `level = magnitude / 10`, never clipped; Rotate `30 L` degrees, ShearX/Y `0.3 L`,
    TranslateX/Y `translate_const L` pixels, Cutout half-size `int(cutout_const L)`, Posterize
    `int(4 L)` bits, Solarize threshold `int(256 L)`, SolarizeAdd `int(110 L)`, enhance factor
    `1.8 L + 0.1` (signs are drawn apart). Evaluated in float64 NumPy, one IEEE operation at a
    time as the reference's Python code does; float arguments are then rounded to float32
    (where TF converts them to tensors), integer ones truncated as Python's `int`. `magnitude`
    is a float64 scalar or array; every value keeps its shape.
    """
    level = np.asarray(magnitude, np.float64) / _MAX_LEVEL

    def f32(v: np.ndarray) -> np.ndarray:
        return np.asarray(v).astype(np.float32)

    def trunc(v: np.ndarray) -> np.ndarray:
        return np.trunc(v).astype(np.int32)

    return dict(
        degrees=f32(level * 30.0), shear=f32(level * 0.3),
        translate=f32(level * translate_const), cutout=trunc(level * cutout_const),
        bits=trunc(level * 4.0), threshold=trunc(level * 256.0), addition=trunc(level * 110.0),
        factor=f32(level * 1.8 + 0.1),
    )


def _grid_top(magnitude: float, magnitude_std: float) -> int:
    """The largest grid index a sampled magnitude can take: magnitude + 8 std, in 1/128."""
    return math.ceil((magnitude + _STD_REACH * magnitude_std) * _GRID)


@functools.cache
def _level_table(top: int, translate_const: float, cutout_const: float
                 ) -> dict[str, np.ndarray]:
    """`_level_rule` at every grid magnitude `j / 128`, j = 0..top (read-only arrays)."""
    table = _level_rule(np.arange(top + 1) / _GRID, translate_const, cutout_const)
    for v in table.values():
        v.setflags(write=False)
    return table


def _split12_host(x: float) -> tuple[np.float32, np.float32]:
    """float32 `x = hi + lo` exactly, each of at most 12 significant bits (`_image.split12`)."""
    f = np.asarray(x, np.float32)
    hi = (f.view(np.int32) & np.int32(~0xFFF)).view(np.float32)
    return np.float32(hi), np.float32(f - hi)


def _magnitude_indices(key: jax.Array, shape: tuple[int, ...], magnitude: float,
                       magnitude_std: float) -> jax.Array:
    """Grid indices `int32[*shape]` of magnitudes drawn from N(magnitude, std) in float32,
    rounded to the nearest multiple of 1/128 (half to even) and clipped to [0, top].

    `std * z` is formed from exact 12-bit partial products, so whether the compiler fuses a
    multiply into the following add (FMA) cannot change the draw, and the product by 128 is
    exact: the same key gives the same indices on every backend.
    """
    z = jax.random.normal(key, shape, jnp.float32)
    z_hi, z_lo = _image.split12(z)
    s_hi, s_lo = _split12_host(magnitude_std)
    spread = (z_hi * s_hi + z_lo * s_hi) + (z_hi * s_lo + z_lo * s_lo)
    m = np.float32(magnitude) + spread
    top = _grid_top(magnitude, magnitude_std)
    return jnp.clip(jnp.round(m * np.float32(_GRID)), 0, top).astype(jnp.int32)


# --------------------------------------------------------------------------- sampling


def randaugment_ops(key: jax.Array, batch: int, num_layers: int, num_ops: int) -> jax.Array:
    """The op draw of `randaugment`: which op each image applies in each layer.

    Uniform over `[0, num_ops)`, independently per image and layer. `randaugment(key, ...)`
    uses `randaugment_ops(jax.random.split(key, 4)[0], ...)`, so this shows which ops a call
    applies (index `i` names `ops[i]`).

    **Arguments:**

    - `key`: a `jax.random` key.
    - `batch`: B >= 0; `num_layers`: >= 0; `num_ops`: >= 1 (concrete ints).

    **Returns:** int32 `[num_layers, batch]`.
    """
    _checks.check_key("key", key)
    batch = _checks.check_positive_int("batch", batch, minimum=0)
    num_layers = _checks.check_positive_int("num_layers", num_layers, minimum=0)
    num_ops = _checks.check_positive_int("num_ops", num_ops, minimum=1)
    return jax.random.randint(key, (num_layers, batch), 0, num_ops, dtype=jnp.int32)


def _layer_params(op: jax.Array, sign: jax.Array, args: dict[str, jax.Array],
                  centers: jax.Array, cfg: _Config, kernels: tuple[str, ...],
                  rotations: np.ndarray | None) -> _Params:
    """Per-image arguments of one layer from its draws (`op`, `sign` `[B]`, `centers`
    `[B, 2]`) and the level arguments `args` (`[B]` each, from `_level_rule`).

    `rotations`: PIL coefficients `int32[2, 2, 3]` of the angles (+d, -d) when the magnitude is
    fixed (computed on the host with Pillow's float64 formula), else None (computed here).
    """
    batch = op.shape[0]
    present = set(cfg.ops)

    def is_op(*names: str) -> jax.Array:
        return jnp.isin(op, jnp.asarray([i for i, n in enumerate(cfg.ops) if n in names],
                                        jnp.int32))

    geometry = _tf_geometry if cfg.tf_compat else _pil_geometry
    matrix = geometry.identity(batch)

    def rotation() -> jax.Array:
        if rotations is not None:
            both = jnp.asarray(rotations)
            return jnp.where(sign[:, None, None] > 0, both[0], both[1])
        return geometry.rotation(sign * args["degrees"], cfg.height, cfg.width)

    builders = {
        "Rotate": rotation,
        "ShearX": lambda: geometry.shear_x(sign * args["shear"]),
        "ShearY": lambda: geometry.shear_y(sign * args["shear"]),
        "TranslateX": lambda: geometry.translate_x(sign * args["translate"], cfg.width),
        "TranslateY": lambda: geometry.translate_y(sign * args["translate"], cfg.height),
    }
    for name in _GEOMETRIC:
        if name in present:
            matrix = jnp.where(is_op(name)[:, None, None], builders[name](), matrix)
    box = jnp.zeros((batch, 4), jnp.int32)
    if "Cutout" in present:
        boxes = _image.cutout_boxes(centers, args["cutout"], cfg.height, cfg.width)
        box = jnp.where(is_op("Cutout")[:, None], boxes, box)
    kernel_of_op = jnp.asarray([kernels.index(_KERNEL_OF_OP[n]) for n in cfg.ops], jnp.int32)
    return _Params(
        kernel=kernel_of_op[op], op=op, matrix=matrix, box=box,
        factor=jnp.where(is_op(*_ENHANCE), args["factor"], np.float32(1.0)),
        shift=_kernels.posterize_shift(args["bits"], cfg.tf_compat),
        threshold=_kernels.solarize_threshold(args["threshold"], cfg.tf_compat),
        addition=args["addition"],
    )


# --------------------------------------------------------------------------- executors


def _kernel_fns(cfg: _Config, kernels: tuple[str, ...]) -> list[Callable[..., jax.Array]]:
    """The op kernels as `fn(images, params) -> images` on a batch (of one, in the loop)."""
    fns = {
        "warp": lambda x, p: _image.warp(x, p.matrix, cfg.fill),
        "cutout": lambda x, p: _image.fill_boxes(x, p.box, cfg.fill),
        "auto_contrast": lambda x, p: _kernels.auto_contrast_kernel(x, cfg.tf_compat),
        "equalize": lambda x, p: _kernels.equalize_kernel(x),
        "invert": lambda x, p: _image.invert_values(x),
        "posterize": lambda x, p: _kernels.posterize_kernel(x, p.shift),
        "solarize": lambda x, p: _kernels.solarize_kernel(x, p.threshold),
        "solarize_add": lambda x, p: _kernels.solarize_add_kernel(
            x, p.addition, jnp.full_like(p.addition, _SOLARIZE_ADD_THRESHOLD)),
        "color": lambda x, p: _kernels.color_kernel(x, p.factor, cfg.tf_compat),
        "contrast": lambda x, p: _kernels.contrast_kernel(x, p.factor, cfg.tf_compat),
        "brightness": lambda x, p: _kernels.brightness_kernel(x, p.factor),
        "sharpness": lambda x, p: _kernels.sharpness_kernel(x, p.factor, cfg.tf_compat),
    }
    return [fns[k] for k in kernels]


def _run_per_image(images: jax.Array, params: _Params, cfg: _Config,
                   kernels: tuple[str, ...]) -> jax.Array:
    """Loop over images; each applies its own op of every layer (`params` is `[L, B, ...]`)."""
    fns = _kernel_fns(cfg, kernels)
    num_layers = params.op.shape[0]

    def body(b: jax.Array, out: jax.Array) -> jax.Array:
        image = lax.dynamic_index_in_dim(out, b, keepdims=True)
        for i in range(num_layers):
            p = jax.tree.map(lambda a, i=i: lax.dynamic_index_in_dim(a[i], b), params)
            if len(fns) == 1:  # a conditional keeps XLA from fusing one layer into the next
                image = _image.materialize(fns[0], image, p)
            else:
                image = lax.switch(p.kernel[0], fns, image, p)
        return lax.dynamic_update_index_in_dim(out, image, b, 0)

    return lax.fori_loop(0, images.shape[0], body, images)


def _equalize_capacity(batch: int, ops: tuple[str, ...]) -> int:
    """How many images a layer's Equalize histograms are computed for before falling back to
    the whole batch: twice the expected count plus 8, about six standard deviations up."""
    share = ops.count("Equalize") / len(ops)
    return min(batch, math.ceil(2 * batch * share) + 8)


def _equalize_luts_of_some(x: jax.Array, selected: jax.Array, ops: tuple[str, ...]
                           ) -> jax.Array:
    """Equalize tables `uint8[B, 3, 256]`, exact for the `selected` images (others: any).

    The histogram (a scatter-add over every pixel) is the costliest part of a layer on GPU, and
    only the images that drew Equalize need it: gather up to `_equalize_capacity` of them
    first; the rare layer with more runs the whole batch.
    """
    batch = x.shape[0]
    capacity = _equalize_capacity(batch, ops)
    if capacity >= batch:
        return _image.equalize_luts(_image.channel_histograms(x))
    order = jnp.argsort(~selected, stable=True)[:capacity]  # selected images first

    def some(x: jax.Array) -> jax.Array:
        luts = _image.equalize_luts(_image.channel_histograms(x[order]))
        identity = jnp.broadcast_to(jnp.arange(256, dtype=jnp.uint8), (batch, 3, 256))
        return identity.at[order].set(luts)

    def every(x: jax.Array) -> jax.Array:
        return _image.equalize_luts(_image.channel_histograms(x))

    return lax.cond(selected.sum() <= capacity, some, every, x)


def _layer_luts(x: jax.Array, p: _Params, cfg: _Config, is_op: Callable[[str], jax.Array]
                ) -> jax.Array:
    """`uint8[B, 3, 256]`: each image's table for its op; identity for non-table ops."""
    present = set(cfg.ops)
    batch = x.shape[0]
    v = jnp.arange(256, dtype=jnp.int32)[None, None, :]
    vf = v.astype(jnp.float32)

    def col(a: jax.Array) -> jax.Array:
        return a[:, None, None]

    def table(name: str) -> jax.Array:
        if name == "AutoContrast":
            lo, hi = _image.channel_min_max(x)
            if not cfg.tf_compat:
                return _image.pil_autocontrast_luts(lo, hi)
            return _image.autocontrast_values(vf, lo.astype(jnp.float32)[..., None],
                                              hi.astype(jnp.float32)[..., None])
        if name == "Equalize":
            return _equalize_luts_of_some(x, is_op("Equalize"), cfg.ops)
        if name == "Invert":
            return _image.invert_values(v)
        if name == "Posterize":
            return _image.posterize_values(v, col(p.shift))
        if name == "Solarize":
            return _image.solarize_values(v, col(p.threshold))
        if name == "SolarizeAdd":
            return _image.solarize_add_values(v, col(p.addition), _SOLARIZE_ADD_THRESHOLD)
        if name == "Brightness":
            return _image.blend_values(jnp.float32(0.0), vf, col(p.factor))
        mean = _kernels.contrast_degenerate(x, cfg.tf_compat).astype(jnp.float32)  # Contrast
        return _image.blend_values(col(mean), vf, col(p.factor))

    luts = jnp.broadcast_to(jnp.arange(256, dtype=jnp.uint8), (batch, 3, 256))
    for name in _LUT_OPS:
        if name in present:
            t = jnp.broadcast_to(table(name).astype(jnp.uint8), (batch, 3, 256))
            luts = jnp.where(col(is_op(name)), t, luts)
    return luts


def _layer_batched(x: jax.Array, p: _Params, cfg: _Config) -> jax.Array:
    """One layer for the whole batch: warp, lookup table, blend (each only if some op needs it).

    Every image has one op, so each stage is the identity for the images of the others and can
    read the previous stage's output.
    """
    present = set(cfg.ops)

    def is_op(name: str) -> jax.Array:
        return jnp.isin(p.op, jnp.asarray([i for i, n in enumerate(cfg.ops) if n == name],
                                          jnp.int32))

    has_cutout = "Cutout" in present
    if present.intersection(_GEOMETRIC):
        x = _image.warp(x, p.matrix, cfg.fill, p.box if has_cutout else None)
    elif has_cutout:
        x = _image.fill_boxes(x, p.box, cfg.fill)

    if present.intersection(_LUT_OPS):
        luts = _image.materialize(lambda x: _layer_luts(x, p, cfg, is_op), x)
        x = _image.materialize(_image.apply_luts, x, luts)

    if present.intersection(_BLEND_OPS):
        def degenerate(x: jax.Array) -> jax.Array:
            d = x
            if "Color" in present:
                gray = _image.grayscale(x, tf_compat=cfg.tf_compat)
                gray = jnp.broadcast_to(gray[..., None], x.shape)
                d = jnp.where(is_op("Color")[:, None, None, None], gray, d)
            if "Sharpness" in present:
                smoothed = _image.smooth(x, tf_compat=cfg.tf_compat)
                d = jnp.where(is_op("Sharpness")[:, None, None, None], smoothed, d)
            return d

        factor = jnp.where(is_op("Color") | is_op("Sharpness"), p.factor, 1.0)
        d = _image.materialize(degenerate, x)
        x = _image.blend_values(d.astype(jnp.float32), x.astype(jnp.float32),
                                factor[:, None, None, None])
    return x


def _run_batched(images: jax.Array, params: _Params, cfg: _Config) -> jax.Array:
    def layer(i: jax.Array, x: jax.Array) -> jax.Array:
        return _layer_batched(x, jax.tree.map(lambda a: a[i], params), cfg)

    return lax.fori_loop(0, params.op.shape[0], layer, images)


# --------------------------------------------------------------------------- public API


def _uniform_pixels(key: jax.Array, shape: tuple[int, ...], height: int, width: int) -> jax.Array:
    """`int32[*shape, 2]` (row, column), uniform over the pixels."""
    limits = jnp.broadcast_to(jnp.asarray([height, width], jnp.int32), (*shape, 2))
    return jax.random.randint(key, (*shape, 2), 0, limits, dtype=jnp.int32)


class _Draws(NamedTuple):
    """The random draws of one `randaugment` call, `[num_layers, B]` each."""

    op: jax.Array  # int32 index into ops
    sign: jax.Array  # float32 +-1 for Rotate / Shear / Translate
    level_index: jax.Array | None  # int32 grid index j (magnitude j / 128) when sampled
    centers: jax.Array  # int32 [L, B, 2] Cutout centres (row, column)

    @property
    def magnitude(self) -> jax.Array | None:
        """float32 `[L, B]`: the sampled magnitudes (multiples of 1/128, exact), or None."""
        if self.level_index is None:
            return None
        return self.level_index.astype(jnp.float32) / np.float32(_GRID)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6, 7))
def _sample_draws(key: jax.Array, batch: int, num_layers: int, num_ops: int, magnitude: float,
                  magnitude_std: float, height: int, width: int) -> _Draws:
    k_ops, k_sign, k_mag, k_center = jax.random.split(key, 4)
    op = randaugment_ops(k_ops, batch, num_layers, num_ops)
    sign = jnp.where(jax.random.bernoulli(k_sign, 0.5, (num_layers, batch)), 1.0, -1.0)
    index = None
    if magnitude_std > 0:
        index = _magnitude_indices(k_mag, (num_layers, batch), magnitude, magnitude_std)
    centers = _uniform_pixels(k_center, (num_layers, batch), height, width)
    return _Draws(op, sign.astype(jnp.float32), index, centers)


def _policy_params(draws: _Draws, magnitude: float, magnitude_std: float, cfg: _Config,
                   kernels: tuple[str, ...]) -> _Params:
    """`_Params` of every layer, `[L, B, ...]`: the level arguments come from `_level_rule` at
    the fixed magnitude, or from its table at each image's sampled grid magnitude."""
    num_layers, batch = draws.op.shape
    if draws.level_index is None:
        levels = _level_rule(magnitude, cfg.translate_const, cfg.cutout_const)
        rotations = None
        if not cfg.tf_compat:  # two angles, known now: Pillow's own float64 coefficients
            d = levels["degrees"]
            rotations = _pil_geometry.rotation_on_host(np.stack([d, -d]), cfg.height, cfg.width)
        per_layer = [{k: jnp.broadcast_to(jnp.asarray(v), (batch,)) for k, v in levels.items()}
                     ] * num_layers
    else:
        table = _level_table(_grid_top(magnitude, magnitude_std), cfg.translate_const,
                             cfg.cutout_const)
        looked_up = {k: jnp.asarray(v)[draws.level_index] for k, v in table.items()}
        per_layer = [{k: v[i] for k, v in looked_up.items()} for i in range(num_layers)]
        rotations = None
    layers = [_layer_params(draws.op[i], draws.sign[i], per_layer[i], draws.centers[i], cfg,
                            kernels, rotations) for i in range(num_layers)]
    return jax.tree.map(lambda *a: jnp.stack(a), *layers)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _randaugment(key: jax.Array, images: jax.Array, num_layers: int, magnitude: float,
                 magnitude_std: float, cfg: _Config, executor: str) -> jax.Array:
    if num_layers == 0 or images.shape[0] == 0:
        return images
    draws = _sample_draws(key, images.shape[0], num_layers, len(cfg.ops), magnitude,
                          magnitude_std, cfg.height, cfg.width)
    kernels = tuple(dict.fromkeys(_KERNEL_OF_OP[n] for n in cfg.ops))
    params = _policy_params(draws, magnitude, magnitude_std, cfg, kernels)

    def per_image(x: jax.Array, p: _Params) -> jax.Array:
        return _run_per_image(x, p, cfg, kernels)

    def batched(x: jax.Array, p: _Params) -> jax.Array:
        return _run_batched(x, p, cfg)

    if executor == "per_image":
        return per_image(images, params)
    if executor == "batched":
        return batched(images, params)
    return lax.platform_dependent(images, params, cpu=per_image, default=batched)


def relative_constants(height: int, width: int) -> dict[str, float]:
    """RandAugment's translate and cutout constants as fractions of the image side.

    The reference's constants (translate 100 px, cutout 40 px at level 1) were set for 224-px
    ImageNet crops; on small images they empty the frame (at M = 10 a 32-px image translated
    by 100 px, or under an 80-px cutout, is all fill). This scales them with the shorter side
    so that an op moves or covers the same share of any image as the reference's does of a
    224-px one: `translate_const = 100 * side / 224`, `cutout_const = 40 * side / 224`
    (exactly 100 and 40 at 224 px, 14.29 and 5.71 at 32 px). Splat the result into
    `randaugment`: `randaugment(key, x, **relative_constants(32, 32))`.

    **Arguments:**

    - `height`, `width`: the image size in pixels, ints >= 1.

    **Returns:** `dict(translate_const=float, cutout_const=float)`.
    """
    height = _checks.check_positive_int("height", height, minimum=1)
    width = _checks.check_positive_int("width", width, minimum=1)
    side = min(height, width)
    return {"translate_const": _REFERENCE_TRANSLATE * side / _REFERENCE_SIDE,
            "cutout_const": _REFERENCE_CUTOUT * side / _REFERENCE_SIDE}


def randaugment(
    key: jax.Array,
    images: jax.Array,
    *,
    num_layers: int = 2,
    magnitude: float = 27.0,
    ops: Sequence[str] = DEFAULT_OPS,
    fill: int = 128,
    translate_const: float = 100,
    cutout_const: float = 40,
    magnitude_std: float = 0.0,
    tf_compat: bool = False,
    executor: str = "auto",
) -> jax.Array:
    """Noisy Student's RandAugment on a batch; every image draws its own ops.

    In each of `num_layers` layers every image draws one op uniformly from `ops` (with
    replacement, always applied), its own sign for Rotate/Shear/Translate (p = 0.5) and its
    own Cutout centre (uniform over the pixels). The level `L = magnitude / 10`, never clipped,
    is mapped as the reference maps it: Rotate ±30·L degrees; ShearX/Y ±0.3·L; TranslateX/Y
    ±translate_const·L pixels; Cutout half-size int(cutout_const·L); Posterize int(4·L) bits;
    Solarize threshold int(256·L); SolarizeAdd +int(110·L) below 128; Color, Contrast,
    Brightness, Sharpness factor 1.8·L + 0.1. The rule is evaluated in float64 as the
    reference's Python code does, float arguments then rounded to float32. Geometric ops and
    Cutout fill with `fill`.

    The default constants are the reference's, set for 224-px ImageNet crops. On small images
    they empty the frame: at M = 10 on 32-px images a third of the images come out almost
    entirely `fill` (TranslateX/Y by 100 px, an 80-px Cutout). For such images use constants
    relative to the image size, `**relative_constants(H, W)` (equal to the reference at 224 px).

    **Arguments:**

    - `key`: a `jax.random` key; the same key gives the same output.
    - `images`: `uint8[B, H, W, 3]`, B >= 0 (B = 0 gives an empty batch), a batch (sharded or
      not); no `vmap` needed. At most 4096 px a side when `ops` holds a geometric op or
      Contrast.
    - `num_layers`: ops per image (N), an int >= 0.
    - `magnitude`: M in [0, 1000] (27 as Noisy Student's default; the reference suggests 6-27
      for B2-B7 students).
    - `ops`: op names from `DEFAULT_OPS` (the official 16 in their order, the default).
    - `fill`: the grey level, an int in [0, 255], of pixels moved in from outside and of Cutout.
    - `translate_const`, `cutout_const`: pixels at level 1, numbers in [0, 10^6] (ImageNet
      100 and 40; `relative_constants` for other sizes; the 32-px pipeline uses H // 8, see
      `svhn_augment`).
    - `magnitude_std`: >= 0; > 0 draws the magnitude per image and layer from
      N(magnitude, std) as timm's `mstd` does, in float32, rounded to a multiple of 1/128 and
      clipped at 0 (timm also clips at its `mmax`, 10 by default). The rule then maps each
      drawn magnitude `m` exactly as `magnitude=float(m)` would. `magnitude + 8 std` must not
      exceed 1000 (every float32 normal draw lies within 5.5 standard deviations).
    - `tf_compat`: compute every op as the official TF code did under TF1 with numpy < 2.
      Its corner cases: the Posterize shift and Solarize threshold wrap mod 256 as uint8 (at
      M = 27 Posterize keeps one bit and Solarize inverts values >= 179; at M = 10 Solarize
      inverts everything) and Contrast blends toward min(255, H·W/256) instead of the mean
      grey. Its arithmetic: TF's grayscale, a truncated Sharpness smoothing, float32
      AutoContrast and geometry rounded half away from zero in pixel-index coordinates. The
      default computes each op as PIL does (the library the AutoAugment/RandAugment ops were
      defined with and the TF code ports), bit for bit, with the corner cases corrected:
      Posterize with >= 8 bits and Solarize with threshold >= 256 are the identity, Contrast
      uses the mean grey level. docs/randaugment.md sets the two side by side.
    - `executor`: one of `EXECUTORS`. "per_image" loops over the images, each running only
      its own op per layer (fast on CPU); "batched" runs each layer as one warp, one per-image
      lookup table and one blend over the whole batch (fast on GPU/TPU); "auto" (default)
      picks "per_image" on CPU and "batched" elsewhere via `jax.lax.platform_dependent`. All
      three give the same bits.

    **Returns:** `uint8[B, H, W, 3]`.

    Measured for 256 images of 224x224 at N = 2, M = 27: about 5,000 img/s on 2 CPU cores
    (4,400 with `tf_compat`) and, with the TF numerics, 105,000 img/s on one H200.
    """
    _checks.check_key("key", key)
    _, height, width = _kernels.check_images(images)
    num_layers = _checks.check_positive_int("num_layers", num_layers, minimum=0)
    magnitude = _number("magnitude", magnitude, maximum=_MAX_MAGNITUDE)
    ops = _check_ops(ops)
    if set(ops).intersection((*_GEOMETRIC, "Contrast")):
        _kernels.check_side(images, "RandAugment's geometric ops and Contrast")
    cfg = _Config(
        ops=ops, height=height, width=width, fill=_kernels.check_fill(fill),
        translate_const=_number("translate_const", translate_const, maximum=_MAX_CONSTANT),
        cutout_const=_number("cutout_const", cutout_const, maximum=_MAX_CONSTANT),
        tf_compat=_checks.check_bool("tf_compat", tf_compat),
    )
    magnitude_std = _number("magnitude_std", magnitude_std, maximum=_MAX_MAGNITUDE)
    if magnitude + _STD_REACH * magnitude_std > _MAX_MAGNITUDE:
        raise ValueError(f"magnitude + 8 * magnitude_std must be at most {_MAX_MAGNITUDE:g}, got "
                         f"{magnitude:g} + 8 * {magnitude_std:g}")
    executor = _checks.check_choice("executor", executor, EXECUTORS)
    return _randaugment(key, jnp.asarray(images), num_layers, magnitude, magnitude_std, cfg,
                        executor)


def random_cutout(key: jax.Array, images: jax.Array, size: int, *, fill: int = 128
                  ) -> jax.Array:
    """Cutout at a random centre: a square per image filled with `fill`.

    The reference's `cutout(image, pad_size=size // 2, replace=fill)`: the centre is a pixel
    drawn uniformly per image, the square covers rows `[cy - size // 2, cy + size // 2)` and
    the same columns around `cx`, clipped at the borders (side at most `size`, rounded down to
    even). `nsjax.noise.ops.cutout` is the same with given centres.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `images`: `uint8[B, H, W, 3]`, B >= 0.
    - `size`: the side of the square, an int >= 0 (0 changes nothing).
    - `fill`: an int grey level in [0, 255].

    **Returns:** `uint8[B, H, W, 3]`.
    """
    _checks.check_key("key", key)
    batch, height, width = _kernels.check_images(images)
    size = _checks.check_positive_int("size", size, minimum=0)
    fill = _kernels.check_fill(fill)
    if batch == 0:
        return jnp.asarray(images)
    centers = _uniform_pixels(key, (batch,), height, width)
    boxes = _image.cutout_boxes(centers, jnp.full((batch,), size // 2, jnp.int32), height, width)
    return _image.fill_boxes(jnp.asarray(images), boxes, fill)


def svhn_augment(key: jax.Array, images: jax.Array, *, magnitude: float = 5.0,
                 tf_compat: bool = False) -> jax.Array:
    """The official 32-px (CIFAR-10 / SVHN) training augmentation after decoding.

    RandAugment (N = 2, the given M, translate and cutout constants H // 8, `tf_compat` as in
    `randaugment`), then an extra cutout of half-size H // 4 (16x16 at 32 px) filled with 128
    (`random_cutout(..., 2 * (H // 4))`), then reflect-pad 4 pixels and a random H x W crop per
    image; no flip. `jax.random.split(key, 3)` gives the keys of the three stages.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `images`: `uint8[B, H, W, 3]`, B >= 0, H and W >= 5 (the reflect padding needs 5).
    - `magnitude`: M in [0, 1000]; `tf_compat`: as in `randaugment`.

    **Returns:** `uint8[B, H, W, 3]`.
    """
    _checks.check_key("key", key)
    batch, height, width = _checks.check_images("images", images, dtypes=("uint8",), min_side=5)
    k_ra, k_cut, k_crop = jax.random.split(key, 3)
    x = randaugment(k_ra, images, num_layers=2, magnitude=magnitude,
                    translate_const=height // 8, cutout_const=height // 8, tf_compat=tf_compat)
    x = random_cutout(k_cut, x, 2 * (height // 4), fill=128)
    if batch == 0:
        return x
    pad = 4
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    offsets = jax.random.randint(k_crop, (batch, 2), 0, 2 * pad + 1)
    return jax.vmap(lambda im, o: lax.dynamic_slice(im, (o[0], o[1], 0), (height, width, 3)))(
        padded, offsets)
