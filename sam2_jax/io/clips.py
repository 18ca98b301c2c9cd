"""Generated clips for training and tests, and their DAVIS layout on disk.

`generate_clip(seed)` draws a clip of T frames with N objects on a textured background: frames
(T, H, W, 3) uint8 and the exact visible masks (T, N, H, W) bool, fully determined by the seed.
The recipe is the one that trained a small SAM 2 from scratch (shared/reference/
training_feasibility.md): a panning colour gradient under one texture per clip (smooth colour
noise, stripes, checkers or fine clutter); ellipses, rectangles, convex polygons and blobs
of 7-20% of the frame that move, rotate, scale, occlude one another in a fixed depth order and
may leave the frame; pixel noise. `write_clip_davis` writes a generated clip in the DAVIS 2017 layout.
"""

from __future__ import annotations

import colorsys
import numbers
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from .writers import DavisWriter


@dataclass(frozen=True)
class Clip:
    """A generated clip. T frames, N objects.

    frames: (T, H, W, 3) uint8.
    masks: (T, N, H, W) bool, the visible part of each object (disjoint; empty once an object
      is hidden or has left the frame).
    amodal: (T, N, H, W) bool, each whole shape inside the frame, before occlusion.
    depth: (N,) int, the drawing order: an object hides those of lower depth.
    obj_ids: (1, ..., N), the ids of the masks' N axis.
    """

    frames: np.ndarray
    masks: np.ndarray
    amodal: np.ndarray
    depth: np.ndarray
    obj_ids: tuple[int, ...]


def _check_int(value, name: str, minimum: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def generate_clip(seed: int, num_frames: int = 8, height: int = 128, width: int = 128,
                  max_objects: int = 3, *, min_objects: int = 1, min_area: int = 40,
                  max_noise: float = 0.08) -> Clip:
    """A clip of `num_frames` frames (height, width) with min_objects..max_objects objects, fully
    determined by `seed` (see the module docstring for what is drawn).

    Every object shows at least `min_area` pixels on frame 0 (the objects are redrawn until
    they do). Pixel noise has a standard deviation drawn in [0, max_noise] (in units of the
    full 0-255 range). The background, the objects and the noise use independent streams of
    the seed, so clips that differ only in their objects share background and noise.
    """
    seed = _check_int(seed, "seed", 0)
    num_frames = _check_int(num_frames, "num_frames", 1)
    height, width = _check_int(height, "height", 16), _check_int(width, "width", 16)
    max_objects = _check_int(max_objects, "max_objects", 1)
    min_objects = _check_int(min_objects, "min_objects", 1)
    if min_objects > max_objects:
        raise ValueError(f"min_objects: expected at most max_objects = {max_objects}, got {min_objects}")
    min_area = _check_int(min_area, "min_area", 0)
    if not isinstance(max_noise, numbers.Real) or not 0.0 <= max_noise <= 1.0:
        raise ValueError(f"max_noise: expected a number in [0, 1], got {max_noise!r}")
    background_rng, object_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))

    frames = _background(background_rng, num_frames, height, width)
    n = int(object_rng.integers(min_objects, max_objects + 1))
    for _ in range(100):
        objects = [_random_object(object_rng, num_frames, height, width) for _ in range(n)]
        depth = object_rng.permutation(n)
        amodal = np.stack([_rasterise(o, height, width) for o in objects], axis=1)
        masks = _visible(amodal, depth)
        if (masks[0].sum(axis=(1, 2)) >= min_area).all():
            break
    else:
        raise ValueError(f"min_area: no draw of {n} objects shows {min_area} pixels each on a "
                         f"{height}x{width} frame 0 in 100 tries; lower it")
    for i, obj in enumerate(objects):
        t, y, x = np.nonzero(masks[:, i])
        frames[t, y, x] = _texture(obj, t, y, x)
    sigma = noise_rng.uniform(0.0, max_noise) * 255.0  # uniform grey noise of that deviation
    noise = noise_rng.random((*frames.shape[:3], 1), np.float32) - np.float32(0.5)
    frames += noise * np.float32(sigma * 12 ** 0.5)
    frames = np.clip(frames + 0.5, 0, 255, out=frames).astype(np.uint8)  # rounded
    return Clip(frames, masks, amodal, depth, tuple(range(1, n + 1)))


def _hat(positions: np.ndarray, size: int) -> np.ndarray:
    """(len(positions), size) linear-interpolation weights of points on the grid 0..size-1."""
    return np.maximum(0.0, 1.0 - np.abs(positions[:, None] - np.arange(size)[None, :]))


BACKGROUND_KINDS = ("colour noise", "stripes", "checkerboard", "clutter")


def _background(rng: np.random.Generator, num_frames: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) float32 in 0..255 (unclipped): crops of a larger canvas that pans by up to 2/128
    of the frame per frame: a colour gradient under one of BACKGROUND_KINDS (smooth colour noise,
    stripes, a checkerboard, or fine blocky clutter)."""
    size = min(height, width)
    max_pan = 2.0 / 128.0 * size
    span = int(np.ceil(max_pan * (num_frames - 1))) + 1
    ch, cw = height + span, width + span
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)

    # A smooth gradient between random colours, under one texture: the reference recipe draws one kind per clip.
    canvas = (rng.uniform(40, 215, 3) + rng.uniform(-60, 60, 3) * (xx / cw - 0.5)[..., None]
              + rng.uniform(-60, 60, 3) * (yy / ch - 0.5)[..., None]).astype(np.float32)
    kind = BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))]
    if kind in ("colour noise", "clutter"):  # random colours on a grid, smooth (coarse, bilinear) or blocky (fine)
        if kind == "colour noise":
            gh, gw = rng.integers(2, 11, 2)
            amplitude = rng.uniform(10, 50)
        else:
            gh, gw = ch // rng.integers(2, 7) + 1, cw // rng.integers(2, 7) + 1
            amplitude = rng.uniform(5, 25)
        grid = rng.normal(0.0, amplitude, (gh + 1, gw + 1, 3))
        positions = (np.linspace(0, gh, ch), np.linspace(0, gw, cw))
        if kind == "clutter":
            positions = tuple(np.floor(p) for p in positions)
        wy, wx = _hat(positions[0], gh + 1), _hat(positions[1], gw + 1)
        rows = (wy @ grid.reshape(gh + 1, -1)).reshape(ch, gw + 1, 3)  # (ch, gw + 1, 3)
        canvas += (wx @ rows).astype(np.float32)  # (cw, gw + 1) @ (ch, gw + 1, 3) -> (ch, cw, 3)
    elif kind == "stripes":  # a sinusoidal grating
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 30) * size / 128
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / period) + rng.uniform(0, 2 * np.pi)
        canvas += np.sin(phase)[..., None] * rng.uniform(-50, 50, 3).astype(np.float32)
    else:  # a checkerboard
        cell = rng.uniform(6, 24) * size / 128
        checker = ((xx // cell + yy // cell) % 2) * 2 - 1
        canvas += checker[..., None] * rng.uniform(-60, 60, 3).astype(np.float32)

    pan = rng.normal(size=2)
    pan *= rng.uniform(0, max_pan) / np.linalg.norm(pan)
    offsets = np.arange(num_frames)[:, None] * pan[None, :]
    offsets = np.round(offsets - offsets.min(axis=0)).astype(int)  # (T, 2) y, x in [0, span]
    return np.stack([canvas[oy:oy + height, ox:ox + width] for oy, ox in offsets])


class _Object(NamedTuple):
    """One generated object: its outline and its pose and look in each of the T frames."""

    outline: np.ndarray  # (K, 2) x, y polygon vertices in object units (radius about 1)
    centre: np.ndarray  # (T, 2) x, y in pixels
    angle: np.ndarray  # (T,) radians
    scale: np.ndarray  # (T,) pixels per object unit
    colours: np.ndarray  # (2, 3) in 0..255
    texture: str  # "solid", "stripes" or "shaded"
    direction: np.ndarray  # (2,) unit vector of the stripes or the shading, object units
    period: float  # stripe period, object units


def _outline(rng: np.random.Generator) -> np.ndarray:
    """(K, 2) vertices of a random ellipse, rectangle, convex polygon or blob (star-convex)."""
    kind = rng.integers(4)
    if kind == 0:  # ellipse
        phi = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(phi), rng.uniform(0.45, 1.0) * np.sin(phi)], axis=1)
    if kind == 1:  # rectangle
        b = rng.uniform(0.35, 1.0)
        return np.array([[-1, -b], [1, -b], [1, b], [-1, b]]) / np.hypot(1, b) * 1.2
    if kind == 2:  # convex polygon: vertices on the unit circle
        k = rng.integers(3, 8)
        phi = (np.arange(k) + rng.uniform(-0.35, 0.35, k)) * (2 * np.pi / k)
        return np.stack([np.cos(phi), np.sin(phi)], axis=1)
    # blob: a radius drawn at 5-9 angles, interpolated around the circle
    k = rng.integers(5, 10)
    phi = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radius = np.interp(phi, np.arange(k) * (2 * np.pi / k), rng.uniform(0.5, 1.0, k), period=2 * np.pi)
    return np.stack([radius * np.cos(phi), radius * np.sin(phi)], axis=1)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """(3,) a random colour in 0..255, saturated 70% of the time."""
    saturation = rng.uniform(0.6, 1.0) if rng.random() < 0.7 else rng.uniform(0.0, 0.6)
    return np.array(colorsys.hsv_to_rgb(rng.random(), saturation, rng.uniform(0.3, 1.0))) * 255.0


def _random_object(rng: np.random.Generator, num_frames: int, height: int, width: int) -> _Object:
    """An object of radius 7-20% of the frame starting in its central 70%, with a constant
    velocity (up to 6% of the frame per frame) plus a random acceleration, spin (up to 0.25 rad
    per frame) and growth or shrinkage (up to 6% per frame)."""
    size = min(height, width)
    t = np.arange(num_frames, dtype=np.float64)
    start = rng.uniform(0.15, 0.85, 2) * (width, height)
    heading = rng.uniform(0, 2 * np.pi)
    velocity = rng.uniform(0, 0.06 * size) * np.array([np.cos(heading), np.sin(heading)])
    acceleration = rng.normal(0, 0.15 * size / 128, 2)
    centre = start + velocity * t[:, None] + 0.5 * acceleration * t[:, None] ** 2
    angle = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.25, 0.25) * t
    scale = rng.uniform(0.07, 0.2) * size * np.maximum(0.3, 1 + rng.uniform(-0.06, 0.06) * t)
    texture_angle = rng.uniform(0, 2 * np.pi)
    return _Object(outline=_outline(rng), centre=centre, angle=angle, scale=scale,
                   colours=np.stack([_colour(rng), _colour(rng)]),
                   texture=str(rng.choice(["solid", "stripes", "shaded"])),
                   direction=np.array([np.cos(texture_angle), np.sin(texture_angle)]),
                   period=rng.uniform(0.3, 0.8))


def _rasterise(obj: _Object, height: int, width: int) -> np.ndarray:
    """(T, H, W) bool: the object's filled polygon in each frame."""
    out = np.zeros((len(obj.centre), height, width), bool)
    for t, (centre, angle, scale) in enumerate(zip(obj.centre, obj.angle, obj.scale)):
        c, s = np.cos(angle), np.sin(angle)
        points = obj.outline @ (np.array([[c, s], [-s, c]]) * scale) + centre
        image = Image.new("L", (width, height))
        ImageDraw.Draw(image).polygon([tuple(p) for p in points.tolist()], fill=1)
        out[t] = np.asarray(image, bool)
    return out


def _visible(amodal: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """(T, N, H, W) bool: each amodal mask minus the masks of the objects drawn above it."""
    visible = np.empty_like(amodal)
    cover = np.zeros(amodal[:, 0].shape, bool)
    for i in np.argsort(depth)[::-1]:  # from the top object down
        visible[:, i] = amodal[:, i] & ~cover
        cover |= amodal[:, i]
    return visible


def _texture(obj: _Object, t: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(K, 3) float32 colours (or one (3,) colour) of the object at the pixels (t, y, x) (K,),
    drawn in object coordinates so that the texture moves, turns and scales with the object."""
    a, b = obj.colours.astype(np.float32)
    if obj.texture == "solid":
        return a
    # u = (R(-angle) (pixel - centre) / scale) . direction = (pixel - centre) . (R(angle) direction) / scale
    angle = obj.angle + np.arctan2(obj.direction[1], obj.direction[0])
    ax, ay = (np.stack([np.cos(angle), np.sin(angle)], axis=1) / obj.scale[:, None]).astype(np.float32).T
    cx, cy = obj.centre.astype(np.float32).T
    u = (x.astype(np.float32) - cx[t]) * ax[t] + (y.astype(np.float32) - cy[t]) * ay[t]
    if obj.texture == "stripes":
        weight = np.sin(u * np.float32(2 * np.pi / obj.period)) > 0
    else:
        weight = np.clip((u + 1) / 2, 0, 1)
    return a + weight[:, None] * (b - a)


def write_clip_davis(clip: Clip, root: str | os.PathLike, name: str, *, frame_format: str = "jpg",
                     split: str | None = None, overwrite: bool = False) -> None:
    """Write `clip` as DAVIS 2017 sequence `name` under `root`: frames to
    `JPEGImages/480p/<name>/<frame:05d>.<frame_format>` ("jpg": quality 95, no chroma subsampling;
    "png": lossless)
    and masks to `Annotations/480p/<name>/` through `writers.DavisWriter`; with `split`, the name is
    added to `ImageSets/2017/<split>.txt` (the official toolkit needs that list).
    """
    if not isinstance(clip, Clip):
        raise TypeError(f"clip: expected a Clip from generate_clip, got {type(clip).__name__}")
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"name: expected a plain folder name, got {name!r}")
    if frame_format not in ("jpg", "png"):
        raise ValueError(f"frame_format: expected 'jpg' or 'png', got {frame_format!r}")
    root = Path(root)
    frame_folder = root / "JPEGImages" / "480p" / name
    if frame_folder.exists() and any(frame_folder.iterdir()) and not overwrite:
        raise ValueError(f"root: {str(frame_folder)!r} already exists; pass overwrite=True to replace it")
    with DavisWriter(root / "Annotations" / "480p" / name, overwrite=overwrite) as writer:
        for t, masks in enumerate(clip.masks):
            writer.write(t, masks, clip.obj_ids)
    shutil.rmtree(frame_folder, ignore_errors=True)
    frame_folder.mkdir(parents=True)
    for t, frame in enumerate(clip.frames):
        options = {"quality": 95, "subsampling": 0} if frame_format == "jpg" else {}
        Image.fromarray(frame).save(frame_folder / f"{t:05d}.{frame_format}", **options)
    if split is not None:
        listing = root / "ImageSets" / "2017" / f"{split}.txt"
        listing.parent.mkdir(parents=True, exist_ok=True)
        names = listing.read_text().split() if listing.is_file() else []
        if name not in names:
            listing.write_text("".join(f"{n}\n" for n in [*names, name]))
