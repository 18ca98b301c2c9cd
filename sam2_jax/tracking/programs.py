"""The fixed, small set of programs a session runs, each compiled once per process, ahead of the first click
when asked (`warm_up`).

A session's shapes come in buckets, so that what it is asked changes data, not programs:
- `encode`: the frames encoded together (`frames`: the look-ahead batch; a click's frame is batched with
  the frames after it), at the model's input size.
- `step` (one frame, prompted or tracked) and `scan` (`scan_length` tracked frames as one `lax.scan`), for
  `rows` = `tracker.object_bucket(objects)` (1, 2, 4, 8, 16, ...: the rows past the objects are inert; on the
  CPU at least 16, where a step loops over its live rows only, so 1 to 16 objects share one program) and
  `cond` = the conditioning slots one frame attends to (1, 2, 4, ... up to the session's
  `max_conditioning_frames`). Points are padded to at least `tracker.MIN_SESSION_POINTS` (8) with a mask;
  points, boxes and masks are masked inputs of the same `step` (a frame without mask prompts passes empty
  masks); conditioning or tracked, memory or not, are data.

The programs are the same for every model of one config and dtype (weights are arguments), so they are
kept per (config, dtype) for the process: a second model, session or processor compiles nothing.
"""

from __future__ import annotations

import functools
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

from ..config import EdgeTamVideoConfig, Sam2VideoConfig
from ..models.edgetam_video import video_module
from . import tracker
from .tracker import MIN_SESSION_POINTS, NUM_RECENT, BankShape, StepInputs

DEFAULT_CONDITIONING_FRAMES = 8  # `Sam2VideoInferenceSession(max_conditioning_frames=...)`'s default


def _signature(tree) -> tuple:
    """What a compiled program is specific to: the tree's structure, and each leaf's shape and dtype."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((tuple(x.shape), np.dtype(x.dtype)) for x in leaves)


class ProgramSet:
    """The programs of one config and dtype: `encode`, `step`, `scan`, each compiled for a signature of its
    arguments (weights excluded: they are the same for a config and dtype) on first use or in `warm_up`,
    then called directly. Thread-safe: a call that needs a program another thread is compiling waits for it,
    and only for it."""

    scan_length = 8  # frames per `scan` (each scan is one dispatch)

    def __init__(self, config: Sam2VideoConfig | EdgeTamVideoConfig, dtype):
        self.config, self.dtype = config, jnp.dtype(dtype)
        module = video_module(config)  # SAM 2's or EdgeTAM's, by the config
        self._jitted = {
            "encode": jax.jit(functools.partial(tracker.encode_frames_apart, module)),
            "step": jax.jit(functools.partial(tracker.track_step, module), donate_argnums=(1,)),
            "scan": jax.jit(functools.partial(tracker.track_frames_apart, module), donate_argnums=(1,)),
        }
        self._compiled: dict[tuple, object] = {}
        self._compiling: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()
        self.compile_seconds: dict[str, float] = {}  # program name with its buckets -> seconds (`describe`)

    def __call__(self, name: str, params, *args):
        """Run program `name` on (params, *args), compiling it first if this signature is new."""
        return self.compiled(name, params, *args)(params, *args)

    def compiled(self, name: str, params, *args):
        """The compiled program `name` for these arguments (arrays or `jax.ShapeDtypeStruct`s)."""
        key = (name, _signature(args))
        with self._lock:
            program = self._compiled.get(key)
            if program is not None:
                return program
            compiling = self._compiling.setdefault(key, threading.Lock())
        with compiling:
            program = self._compiled.get(key)
            if program is None:
                began = time.perf_counter()
                program = self._jitted[name].lower(params, *args).compile()
                with self._lock:
                    self._compiled[key] = program
                    self.compile_seconds[describe(name, args)] = time.perf_counter() - began
        return program

    def __len__(self) -> int:
        return len(self._compiled)

    # ------------------------------------------------------------------------------------------- warm-up
    def frames(self) -> int:
        """Frames encoded together: 4, but on the CPU no more than 1024x1024 pixels in all, beyond which the
        encoder's activations outgrow the caches (tiny at 1024 px took 1.35 s a frame alone and 1.93 s in
        batches of 4; small at 256 px, 9 ms alone and 7.4 ms in batches of 4)."""
        if jax.default_backend() != "cpu":
            return 4
        return max(1, min(4, 1024 ** 2 // self.config.image_size ** 2))

    def warm_up(self, params, max_objects: int = 16,
                conditioning_frames: int = DEFAULT_CONDITIONING_FRAMES, stop: threading.Event | None = None) -> None:
        """Compile the set a session of up to `max_objects` objects needs, most needed first: `encode`, then
        `step` and `scan` for 1, 2, 4, ... objects with one conditioning frame a step (more conditioning
        frames, after corrections kept as conditioning, compile on first use). `stop` ends it early."""
        size = self.config.image_size
        pixels = jax.ShapeDtypeStruct((self.frames(), size, size, 3), self.dtype)
        jobs = [("encode", (pixels,))]
        features = jax.eval_shape(self._jitted["encode"], params, pixels)[0]
        rows = tracker.object_bucket(1)
        while True:
            shape = BankShape.for_config(self.config, rows, conditioning_frames, self.dtype)
            state = jax.eval_shape(lambda: tracker.init_state(shape))
            inputs = abstract_step_inputs(shape, MIN_SESSION_POINTS, 1)
            masks = jax.ShapeDtypeStruct((rows, size, size, 1), bool)
            scanned = jax.tree_util.tree_map(
                lambda x: jax.ShapeDtypeStruct((self.scan_length,) + x.shape, x.dtype), inputs)
            jobs += [("step", (state, features, inputs, masks)),
                     ("scan", (state, (features,) * self.scan_length, scanned))]
            if rows >= max_objects:
                break
            rows *= 2
        for name, args in jobs:
            if stop is not None and stop.is_set():
                return
            self.compiled(name, params, *args)


class WarmUp:
    """A warm-up compiling on a background thread (a daemon: it never holds up the end of the process)."""

    def __init__(self, run, *args, **kwargs):
        self.error: BaseException | None = None
        self.finished = threading.Event()  # set when it has finished, stopped or failed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(run, args, kwargs), name="sam2-jax warm-up",
                                        daemon=True)
        self._thread.start()

    def _run(self, run, args, kwargs):
        try:
            run(*args, stop=self._stop, **kwargs)
        except BaseException as err:  # noqa: BLE001 (kept for `wait`: a click compiles its own program anyway)
            self.error = err
        finally:
            self.finished.set()

    @property
    def done(self) -> bool:
        """Whether it has finished (or stopped)."""
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until it finishes (at most `timeout` seconds); whether it has. Raises what it raised."""
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.done

    def stop(self) -> None:
        """Stop after the program being compiled."""
        self._stop.set()


def describe(name: str, args) -> str:
    """A program's name with its buckets, e.g. 'step[rows=4, cond=1, points=8]', 'encode[frames=4]'."""
    if name == "encode":
        return f"encode[frames={args[0].shape[0]}]"
    state, inputs = args[0], args[-1] if name == "scan" else args[2]
    return (f"{name}[rows={state.cond_pointers.shape[0]}, cond={inputs.cond_index.shape[-1]}, "
            f"points={inputs.points.shape[-2]}]")


def abstract_step_inputs(shape: BankShape, points: int, cond: int) -> StepInputs:
    """The shapes and dtypes of `plan.SessionPlan.step_inputs` for a bank, a points bucket and `cond`
    conditioning slots a step."""
    n, pointers = shape.num_objects, shape.ring - 1

    def of(dtype, *dims):
        return jax.ShapeDtypeStruct(dims, dtype)

    return StepInputs(
        use_memory=of(bool, n), is_mask_prompt=of(bool, n), multimask=of(bool, n),
        points=of(np.float32, n, points, 2), labels=of(np.int32, n, points), point_mask=of(bool, n, points),
        binarize=of(bool, n), cond_index=of(np.int32, n, cond), cond_mask=of(bool, n, cond),
        recent_index=of(np.int32, n, NUM_RECENT), recent_mask=of(bool, n, NUM_RECENT),
        pointer_cond_mask=of(bool, n, cond), pointer_cond_offset=of(np.int32, n, cond),
        pointer_index=of(np.int32, n, pointers), pointer_mask=of(bool, n, pointers), max_pointers=of(np.int32),
        write_cond_slot=of(np.int32, n), write_recent_slot=of(np.int32, n), objects=of(np.int32))


_SETS: dict[tuple, ProgramSet] = {}
_SETS_LOCK = threading.Lock()


def program_set(config: Sam2VideoConfig | EdgeTamVideoConfig, dtype) -> ProgramSet:
    """The process's `ProgramSet` of a config and dtype (made on first use)."""
    key = (config, jnp.dtype(dtype))
    with _SETS_LOCK:
        if key not in _SETS:
            _SETS[key] = ProgramSet(config, dtype)
        return _SETS[key]
