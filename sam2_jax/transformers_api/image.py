"""The transformers-shaped facade: `Sam2Model` and `Sam2Processor` with jax arrays.

Same class names, arguments, nesting of prompt lists and output fields as transformers' SAM 2, so code
written for transformers runs after changing the imports. Layouts follow transformers at this boundary
(pixel_values (B,3,H,W), image_embeddings NCHW); inside, everything is channels-last and jitted.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import processing, runtime, weights
from ..config import EdgeTamConfig, EdgeTamVideoConfig, EdgeTamVisionConfig, Sam2Config, Sam2VideoConfig, replace
from ..models.sam2 import Sam2ImageModule
from ..tracking.tracker import prompt_bucket
from .devices import jax_device

# Keys of a video checkpoint that the image model does not use (transformers ignores the same ones).
VIDEO_ONLY_KEYS = (r"^memory_.*", r"^mask_downsample\..*", r"^object_pointer_proj\..*",
                   r"^temporal_positional_encoding_projection_layer\..*", r"^no_memory_positional_encoding$",
                   r"^no_object_pointer$", r"^occlusion_spatial_embedding_parameter$",
                   r"^spatial_perceiver\..*")  # EdgeTAM's perceiver resampler


class ModelOutput:
    """Attribute and key access to named outputs, like transformers' ModelOutput."""

    def __getitem__(self, name):
        return getattr(self, name)

    def keys(self):
        """The output's field names, in order."""
        return [f.name for f in dataclasses.fields(self)]


@dataclasses.dataclass
class Sam2ImageSegmentationOutput(ModelOutput):
    """pred_masks (B,P,k,256,256) logits, iou_scores (B,P,k), object_score_logits (B,P,1),
    image_embeddings [(B,32,256,256), (B,64,128,128), (B,256,64,64)] (NCHW, as transformers)."""

    iou_scores: jax.Array
    pred_masks: jax.Array
    object_score_logits: jax.Array
    image_embeddings: list


class BatchFeature(dict):
    """A dict with attribute access, as transformers' processor outputs: `model(**inputs)` works."""

    def to(self, device=None):
        """The same outputs with their jax arrays on `device` (a jax.Device or a name such as "cpu", "cuda")."""
        target = jax_device(device, "device")
        if target is None:
            return self
        return BatchFeature({k: jax.device_put(v, target) if isinstance(v, jax.Array) else v for k, v in self.items()})

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err


def _cast_floats(tree, dtype):
    return jax.tree_util.tree_map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


class PretrainedModel:
    """Construction, loading, saving and placement shared by `Sam2Model` and `Sam2VideoModel`.

    `Model(config)` initialises the weights as transformers does (`weights.init_params`, keyed by `seed`);
    `Model(config, params)` takes given ones."""

    module_class: type  # the flax module
    model_type: str  # the transformers model_type written by save_pretrained
    accepted_model_types: tuple[str, ...]  # checkpoints from_pretrained reads
    edgetam_accepted_model_types: tuple[str, ...] = ()  # and the EdgeTAM ones
    ignored_keys: tuple[str, ...] = ()  # checkpoint tensors the module does not use (regexes)
    edgetam_model_type: str | None = None  # the model_type it takes an EdgeTAM config as, if it takes them

    @classmethod
    def abstract_params(cls, config: Sam2Config | Sam2VideoConfig):
        """Param shapes for `config` (nothing is allocated)."""
        config = cls._own_config(config)
        size = input_size(config)
        module = cls.module_class(config)
        return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, *size, 3))))["params"]

    @classmethod
    def _own_config(cls, config) -> Sam2Config | Sam2VideoConfig:
        """`config` as this model's config class (the image parts of a video config, for the image model)."""
        if not isinstance(config, (Sam2Config, Sam2VideoConfig, EdgeTamVideoConfig)):
            raise TypeError(f"config: expected a Sam2Config, Sam2VideoConfig, EdgeTamConfig or EdgeTamVideoConfig "
                            f"(sam2_jax.config), got {type(config).__name__}")
        edgetam = isinstance(config, (EdgeTamConfig, EdgeTamVideoConfig))
        target = cls.edgetam_model_type if edgetam else cls.model_type
        if target is None or (not edgetam and cls.edgetam_model_type == cls.model_type):
            raise ValueError(f"config: {cls.__name__} takes {'SAM 2' if edgetam else 'EdgeTAM'} configs, got a "
                             f"{type(config).__name__}")
        return replace(config, model_type=target)

    @classmethod
    def init_params(cls, config: Sam2Config | Sam2VideoConfig, seed: int = 0) -> dict[str, Any]:
        """Weights initialised as transformers initialises them (`weights.init_params`), keyed by `seed`."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
        config = cls._own_config(config)
        return weights.init_params(cls.abstract_params(config), config.initializer_range,
                                   config.prompt_encoder_config.scale, int(seed))

    @classmethod
    def from_config(cls, config: Sam2Config | Sam2VideoConfig, seed: int = 0, dtype=jnp.float32):
        """A model with random weights (`weights.random_params`: random kernels and embeddings, zero biases, unit
        norm scales), for tests, demos and training; `Model(config)` gives transformers' initialisation instead."""
        return cls(config, weights.random_params(cls.abstract_params(config), seed), dtype)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, dtype=jnp.float32):
        """Load a transformers checkpoint folder (or a packaged model by name, `weights.PACKAGED`); strict: every
        tensor must fit the config."""
        folder = weights.checkpoint_folder(pretrained_model_name_or_path)
        config = weights.read_config(folder)
        if config.model_type not in cls.accepted_model_types + cls.edgetam_accepted_model_types:
            raise ValueError(f"pretrained_model_name_or_path: expected a checkpoint of model_type "
                             f"{' or '.join(map(repr, cls.accepted_model_types + cls.edgetam_accepted_model_types))}, got "
                             f"{config.model_type!r}")
        params = weights.state_dict_to_params(weights.read_state_dict(folder), cls.abstract_params(config),
                                              ignore=cls.ignored_keys)
        return cls(config, params, dtype)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write config.json + model.safetensors (float32) that transformers loads strictly, and the processor
        files for the model's input size (`Sam2Processor.save_pretrained`)."""
        weights.save_checkpoint(save_directory, _cast_floats(self.params, jnp.float32), self.config)
        Sam2Processor(size=self.config.prompt_encoder_config.image_size).save_pretrained(save_directory)

    # ------------------------------------------------------------------------------- placement
    @property
    def device(self):
        """The jax.Device holding the weights."""
        leaf = jax.tree_util.tree_leaves(self.params)[0]
        return next(iter(leaf.devices())) if isinstance(leaf, jax.Array) else jax.devices()[0]

    def to(self, device=None, dtype=None):
        """Move the weights to `device` (a jax.Device, "cpu", "cuda", "gpu", "tpu", or None: where they are)
        and cast their floats to `dtype`; returns the model, as transformers' `to` does."""
        target = jax_device(device, "device")
        if dtype is not None:
            try:
                dtype = jnp.dtype(dtype)
            except TypeError as err:
                raise TypeError(f"dtype: expected a JAX floating dtype such as jnp.bfloat16, got {dtype!r}") from err
            if not jnp.issubdtype(dtype, jnp.floating):
                raise TypeError(f"dtype: expected a floating dtype, got {dtype}")
            self.params = _cast_floats(self.params, dtype)
            self.dtype = dtype
        if target is not None:
            self.params = jax.device_put(self.params, target)
        return self

    def num_parameters(self) -> int:
        """The number of weights (as transformers' `num_parameters`)."""
        return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(self.params)))


class Sam2Model(PretrainedModel):
    """SAM 2 image segmentation, mirroring transformers `Sam2Model` (weights from a transformers folder;
    a video checkpoint works too, its memory tensors are ignored as transformers ignores them).

    An EdgeTAM config or checkpoint (model_type "edgetam" or "edgetam_video") gives the EdgeTAM image model:
    the same module with RepViT's vision encoder (see `EdgeTamModel`)."""

    module_class = Sam2ImageModule
    model_type = "sam2"
    accepted_model_types = ("sam2", "sam2_video")
    edgetam_model_type = "edgetam"
    edgetam_accepted_model_types = ("edgetam", "edgetam_video")
    ignored_keys = VIDEO_ONLY_KEYS

    def __init__(self, config: Sam2Config, params: dict[str, Any] | None = None, dtype=jnp.float32, seed: int = 0):
        self.config = self._own_config(config)
        self.dtype = jnp.dtype(dtype)
        self.params = _cast_floats(self.init_params(self.config, seed) if params is None else params, self.dtype)
        self.module = Sam2ImageModule(self.config)
        runtime.default_compile_cache()
        apply = self.module.apply
        self._encode = jax.jit(lambda p, x: apply({"params": p}, x, method=Sam2ImageModule.image_embeddings))
        self._decode = jax.jit(
            lambda p, emb, pts, lbl, box, msk, pmask, multimask: apply(
                {"params": p}, emb, pts, lbl, box, msk, pmask, multimask, method=Sam2ImageModule.decode),
            static_argnums=(7,))

    # ------------------------------------------------------------------------------- inference
    def get_image_embeddings(self, pixel_values) -> list:
        """pixel_values (B,3,H,W) -> [s0 (B,32,4h,4w), s1 (B,64,2h,2w), level2 (B,256,h,w)] (NCHW)."""
        pixels = self._check_pixel_values(pixel_values)
        return [jnp.transpose(e, (0, 3, 1, 2)) for e in self._encode(self.params, pixels)]

    def __call__(self, pixel_values=None, input_points=None, input_labels=None, input_boxes=None,
                 input_masks=None, image_embeddings=None, multimask_output: bool = True,
                 original_sizes=None) -> Sam2ImageSegmentationOutput:
        """transformers `Sam2Model.forward`. `original_sizes` (from the processor) is accepted and unused,
        so that `model(**processor(...))` works."""
        if (pixel_values is None) == (image_embeddings is None):
            raise ValueError("pixel_values, image_embeddings: expected exactly one of them, got "
                             f"{'both' if pixel_values is not None else 'neither'}")
        if pixel_values is not None:
            embeddings = self._encode(self.params, self._check_pixel_values(pixel_values))
        else:
            embeddings = self._check_image_embeddings(image_embeddings)
        batch = embeddings[-1].shape[0]
        points, labels, point_mask = self._check_points(input_points, input_labels, batch)
        boxes = self._check_boxes(input_boxes, batch, None if points is None else points.shape[1])
        masks = self._check_masks(input_masks, batch)
        pred_masks, iou, obj = self._decode(self.params, embeddings, points, labels, boxes, masks, point_mask,
                                            bool(multimask_output))
        return Sam2ImageSegmentationOutput(
            iou_scores=iou, pred_masks=pred_masks, object_score_logits=obj,
            image_embeddings=[jnp.transpose(e, (0, 3, 1, 2)) for e in embeddings])

    # ------------------------------------------------------------------------------ validation
    @property
    def image_size(self) -> int:
        """The model's input size in pixels (square), which prompts are scaled to."""
        return self.config.prompt_encoder_config.image_size

    def _check_pixel_values(self, pixel_values):
        shape = tuple(np.shape(pixel_values))
        size = input_size(self.config)
        if len(shape) == 4 and shape[1] == 3 and shape[2:] != size:
            raise ValueError(f"pixel_values: the model takes {size[0]}x{size[1]} px images, got {shape[2]}x{shape[3]} "
                             f"(shape {shape}); make the processor with Sam2Processor.from_pretrained(<the model's "
                             f"checkpoint>) or Sam2Processor(size={size[0]})")
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"pixel_values: expected shape (batch, 3, {size[0]}, {size[1]}) as the processor "
                             f"returns, got {shape}")
        if not jnp.issubdtype(jnp.asarray(pixel_values).dtype, jnp.floating):
            raise TypeError(f"pixel_values: expected floating point values (normalised by the processor), "
                            f"got dtype {jnp.asarray(pixel_values).dtype}")
        return jnp.transpose(jnp.asarray(pixel_values, self.dtype), (0, 2, 3, 1))

    def _check_image_embeddings(self, image_embeddings):
        expected = [self.get_image_embeddings_shape(i) for i in range(3)]
        if not isinstance(image_embeddings, (list, tuple)) or len(image_embeddings) != 3:
            raise ValueError("image_embeddings: expected the list of 3 arrays from get_image_embeddings, got "
                             f"{type(image_embeddings).__name__}")
        out = []
        for i, (e, exp) in enumerate(zip(image_embeddings, expected)):
            if tuple(np.shape(e))[1:] != exp:
                raise ValueError(f"image_embeddings[{i}]: expected shape (batch, {', '.join(map(str, exp))}), "
                                 f"got {tuple(np.shape(e))}")
            out.append(jnp.transpose(jnp.asarray(e, self.dtype), (0, 2, 3, 1)))
        if len({e.shape[0] for e in out}) != 1:
            raise ValueError(f"image_embeddings: expected one batch size, got {[e.shape[0] for e in out]}")
        return tuple(out)

    def get_image_embeddings_shape(self, level: int) -> tuple[int, int, int]:
        """(channels, height, width) of `get_image_embeddings()[level]` for one image (level 0 is the finest)."""
        h = self.config.prompt_encoder_config.image_embedding_size
        channels = (self.config.mask_decoder_config.hidden_size // 8, self.config.mask_decoder_config.hidden_size // 4,
                    self.config.vision_config.fpn_hidden_size)
        scale = (4, 2, 1)[level]
        return (channels[level], h * scale, h * scale)

    def _check_points(self, input_points, input_labels, batch):
        if input_points is None and input_labels is None:
            return None, None, None
        if input_points is None or input_labels is None:
            given, missing = ("input_points", "input_labels") if input_labels is None else ("input_labels",
                                                                                          "input_points")
            raise ValueError(f"{missing}: expected it together with {given}, got None")
        points = np.asarray(input_points, np.float32)
        labels = np.asarray(input_labels)
        if points.ndim != 4 or points.shape[-1] != 2 or points.shape[0] != batch:
            raise ValueError(f"input_points: expected shape ({batch}, objects, points, 2), got {points.shape}")
        if labels.shape != points.shape[:3]:
            raise ValueError(f"input_labels: expected shape {points.shape[:3]} to match input_points, got "
                             f"{labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"input_labels: expected integers, got dtype {labels.dtype}")
        real = ~np.all(points == processing.POINT_PAD_VALUE, axis=-1)
        coords = points[real]
        if np.isnan(coords).any() or (coords < 0).any() or (coords > self.image_size).any():
            bad = coords[np.isnan(coords).any(-1) | (coords < 0).any(-1) | (coords > self.image_size).any(-1)][0]
            raise ValueError(f"input_points: expected coordinates in [0, {self.image_size}] (the processor scales "
                             f"them to the model's input size), got {bad.tolist()}")
        n = points.shape[2]
        pad = prompt_bucket(n) - n
        point_mask = np.pad(np.ones(points.shape[:3], bool), ((0, 0), (0, 0), (0, pad)))
        points = np.pad(points, ((0, 0), (0, 0), (0, pad), (0, 0)))
        labels = np.pad(labels.astype(np.int32), ((0, 0), (0, 0), (0, pad)), constant_values=-1)
        return jnp.asarray(points, self.dtype), jnp.asarray(labels), jnp.asarray(point_mask)

    def _check_boxes(self, input_boxes, batch, num_prompts):
        if input_boxes is None:
            return None
        boxes = np.asarray(input_boxes, np.float32)
        if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != batch:
            raise ValueError(f"input_boxes: expected shape ({batch}, boxes, 4) as x1, y1, x2, y2, got {boxes.shape}")
        if num_prompts is not None and boxes.shape[1] != num_prompts:
            raise ValueError(f"input_boxes: expected as many boxes as point prompts ({num_prompts}), got "
                             f"{boxes.shape[1]}")
        inverted = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
        if inverted.any():
            raise ValueError(f"input_boxes: expected x1 <= x2 and y1 <= y2, got {boxes[inverted][0].tolist()}")
        if np.isnan(boxes).any() or (boxes < 0).any() or (boxes > self.image_size).any():
            raise ValueError(f"input_boxes: expected coordinates in [0, {self.image_size}], got "
                             f"{boxes.reshape(-1, 4)[0].tolist()}")
        return jnp.asarray(boxes, self.dtype)

    def _check_masks(self, input_masks, batch):
        if input_masks is None:
            return None
        masks = jnp.asarray(input_masks)
        if masks.ndim == 3:
            masks = masks[:, None]
        if masks.ndim != 4 or masks.shape[:2] != (batch, 1):
            raise ValueError(f"input_masks: expected shape ({batch}, 1, height, width), got {tuple(np.shape(input_masks))}")
        if masks.dtype == bool:
            masks = masks.astype(self.dtype)
        return jnp.transpose(masks, (0, 2, 3, 1))


class EdgeTamModel(Sam2Model):
    """EdgeTAM image segmentation, mirroring transformers `EdgeTamModel`: `Sam2Model` restricted to EdgeTAM
    configs and checkpoints (model_type "edgetam", or "edgetam_video" whose video tensors are ignored)."""

    model_type = "edgetam"
    accepted_model_types = ()


def input_size(config) -> tuple[int, int]:
    """The (height, width) in pixels that the vision encoder of `config` takes: Hiera's image_size for SAM 2, the
    prompt encoder's (the model's) image size for EdgeTAM, whose RepViT takes any multiple of 32."""
    if isinstance(config.vision_config, EdgeTamVisionConfig):
        size = config.prompt_encoder_config.image_size
        return (size, size)
    return tuple(config.vision_config.backbone_config.image_size)


# transformers' processor files: the image processor's, the video processor's, and (transformers 5) both nested.
PREPROCESSOR_NAME = "preprocessor_config.json"
VIDEO_PREPROCESSOR_NAME = "video_preprocessor_config.json"
PROCESSOR_NAME = "processor_config.json"
# The preprocessing sam2_jax implements: transformers' Sam2ImageProcessor defaults (size aside).
_PREPROCESSING = {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
                  "image_mean": list(processing.IMAGENET_MEAN), "image_std": list(processing.IMAGENET_STD),
                  "resample": 2, "rescale_factor": 1 / 255}


def _read_preprocessing(folder: str) -> dict:
    """Sam2Processor arguments from a checkpoint folder: the image processor of preprocessor_config.json (or the
    one nested in processor_config.json) and the processor's target_size, else the model's input size from
    config.json. Settings that sam2_jax does not implement are an error, never silently ignored."""
    processor = _read_json(os.path.join(folder, PROCESSOR_NAME))
    path = os.path.join(folder, PREPROCESSOR_NAME)
    image = _read_json(path)
    if image is None and processor is not None and "image_processor" in processor:
        path, image = os.path.join(folder, PROCESSOR_NAME), processor["image_processor"]
    target_size = (processor or {}).get("target_size")
    if image is None:
        return {"size": weights.read_config(folder).prompt_encoder_config.image_size, "target_size": target_size}
    for key, expected in _PREPROCESSING.items():
        value = image.get(key, expected)
        if value != expected and not (isinstance(value, list) and np.allclose(value, expected)):
            raise ValueError(f"pretrained_model_name_or_path: {path!r} sets {key} = {value!r}; sam2_jax's processor "
                             f"implements {key} = {expected!r} only (transformers' Sam2ImageProcessor default)")
    size = image.get("size", {"height": 1024, "width": 1024})
    if not isinstance(size, dict) or size.get("height") != size.get("width") or not size.get("height"):
        raise ValueError(f"pretrained_model_name_or_path: {path!r} sets size = {size!r}; expected a square "
                         "{'height': S, 'width': S}, the model's input size")
    return {"size": size["height"], "target_size": target_size}


def _read_json(path: str) -> dict | None:
    """The JSON object in `path`, or None if there is no such file."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"pretrained_model_name_or_path: {path!r} is not readable JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"pretrained_model_name_or_path: expected a JSON object in {path!r}, got "
                         f"{type(data).__name__}")
    return data


class Sam2Processor:
    """transformers `Sam2Processor` with default arguments: images to pixel_values, prompts scaled to the
    model's input size and padded as transformers pads them, masks post-processed.

    `from_pretrained(checkpoint)` takes the input size from the checkpoint, so it fits the model; the bare
    constructor takes transformers' default, 1024 px."""

    def __init__(self, size: int = 1024, target_size: int | None = None, point_pad_value: int = -10):
        if point_pad_value != processing.POINT_PAD_VALUE:
            raise ValueError(f"point_pad_value: expected {processing.POINT_PAD_VALUE} (transformers' value, which the "
                             f"model treats as a zero token), got {point_pad_value}")
        for name, value in (("size", size), ("target_size", size if target_size is None else target_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name}: expected a positive int (pixels), got {value!r}")
        self.size = int(size)
        self.target_size = int(target_size) if target_size is not None else self.size
        self.point_pad_value = point_pad_value

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike):
        """The processor of a checkpoint folder (or packaged model by name), as transformers reads it: from
        preprocessor_config.json (or processor_config.json), else from the model's config.json."""
        folder = weights.checkpoint_folder(pretrained_model_name_or_path)
        return cls(**_read_preprocessing(folder))

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write preprocessor_config.json and video_preprocessor_config.json, which transformers'
        `Sam2Processor` and `Sam2VideoProcessor` load (as does `from_pretrained` here)."""
        os.makedirs(save_directory, exist_ok=True)
        size = {"height": self.size, "width": self.size}
        files = {PREPROCESSOR_NAME: {**_PREPROCESSING, "image_processor_type": "Sam2ImageProcessor", "size": size,
                                     "mask_size": {"height": 256, "width": 256}},
                 VIDEO_PREPROCESSOR_NAME: {**_PREPROCESSING, "video_processor_type": "Sam2VideoVideoProcessor",
                                           "size": size}}
        if self.target_size != self.size:
            files[PROCESSOR_NAME] = {"processor_class": type(self).__name__, "target_size": self.target_size,
                                     "point_pad_value": self.point_pad_value}
        for name, settings in files.items():
            with open(os.path.join(save_directory, name), "w") as f:
                json.dump(settings, f, indent=2, sort_keys=True)

    def __call__(self, images=None, input_points=None, input_labels=None, input_boxes=None, original_sizes=None,
                 return_tensors: str | None = "jax", **unused) -> BatchFeature:
        if return_tensors not in ("jax", "np", "pt", None):
            raise ValueError(f"return_tensors: expected 'jax', 'np' or None, got {return_tensors!r}")
        if return_tensors == "pt":
            raise ValueError("return_tensors: 'pt' is transformers' torch output; sam2_jax returns 'jax' or 'np'")
        out = BatchFeature()
        if images is not None:
            pixel_values, sizes = processing.preprocess_images(images, size=self.size)
            out["pixel_values"] = pixel_values
            out["original_sizes"] = np.asarray(sizes, np.int64)
        elif original_sizes is not None:
            out["original_sizes"] = np.asarray(original_sizes, np.int64)
        else:
            raise ValueError("images, original_sizes: expected at least one of them, got neither")
        if any(x is not None for x in (input_points, input_labels, input_boxes)):
            out.update(processing.prepare_prompts(input_points, input_labels, input_boxes,
                                                  original_sizes=out["original_sizes"].tolist(),
                                                  target_size=self.target_size, sizes_from_images=images is not None))
        if return_tensors == "jax":
            out = BatchFeature({k: jax.device_put(np.asarray(v)) for k, v in out.items()})  # no program to compile
        return out

    def post_process_masks(self, masks, original_sizes, mask_threshold: float = 0.0, binarize: bool = True,
                           max_hole_area: float = 0.0, max_sprinkle_area: float = 0.0,
                           apply_non_overlapping_constraints: bool = False, **unused):
        """Upscale (B-list of (P,k,h,w)) mask logits to each image's original size; see
        `sam2_jax.processing.post_process_masks` (hole filling and sprinkle removal really happen here)."""
        return processing.post_process_masks(
            masks, original_sizes, mask_threshold=mask_threshold, binarize=binarize, max_hole_area=max_hole_area,
            max_sprinkle_area=max_sprinkle_area, apply_non_overlapping_constraints=apply_non_overlapping_constraints)
