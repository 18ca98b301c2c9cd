"""transformers' read and write access to a video session's state (`add_point_inputs`, `get_output`,
`store_output`, `point_inputs_per_obj`, ...), as a mixin of `Sam2VideoInferenceSession`.

The session keeps transformers' state in its own shapes (prompts and outputs per object on the host, memories
in device slots that mirror a host archive); these methods read and write that state in transformers' shapes:
- point inputs {"point_coords": (1,1,K,2) float, "point_labels": (1,1,K) int} in model-input pixels;
- mask inputs (1,1,S,S) float;
- outputs per frame: "pred_masks" (1,1,h,w) logits, "object_score_logits" (1,1,1), "object_pointer" (1,1,C),
  "maskmem_features" in transformers' layouts: (h*w,1,M) bfloat16 for SAM 2, (1,L,M) in the model's dtype for
  EdgeTAM (L = the perceiver's latents, 512). transformers' "maskmem_pos_enc" (it follows
  from the config) and "high_res_masks" (used within a call) are not kept: `store_output` accepts them in a
  dict and drops them, `get_output` says they are not kept.
A write changes what later calls see as it does in transformers: a stored memory or pointer is the one later
frames attend to (written to the device slot that holds its frame, or loaded from the host when a frame
needs it), a stored conditioning mask is the one a later call on that frame replays. Tracked (non-conditioning)
frames keep their masks and scores with the memory archive (`keep_memory_archive`, on for a whole video);
without it, reading them is an error that says so.
Every method checks its arguments first and leaves the session unchanged when it refuses them.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

OUTPUT_KEYS = ("pred_masks", "object_score_logits", "object_pointer", "maskmem_features", "maskmem_pos_enc",
               "high_res_masks")
_STORABLE = ("pred_masks", "object_score_logits", "object_pointer", "maskmem_features")


class _FramesView(Mapping):
    """`processed_frames`: frame index -> pixel_values (3,S,S), decoded on access (frames stay uint8 until
    then); a streaming session holds only its newest frames."""

    def __init__(self, session):
        self._session = session

    def __getitem__(self, frame_idx):
        return self._session.get_frame(frame_idx)

    def __iter__(self):
        s = self._session
        return iter(range(len(s.video)) if not s.streaming else sorted(s.streamed_frames))

    def __len__(self):
        s = self._session
        return len(s.video) if not s.streaming else len(s.streamed_frames)


class SessionStateAccess:
    """transformers `Sam2VideoInferenceSession`'s accessors, over the session's state (see the module)."""

    # ------------------------------------------------------------------------------------- frames
    @property
    def processed_frames(self):
        """frame index -> pixel_values (3,S,S) (a read-only view; None for a stream with no frame yet)."""
        if self.streaming and not self.streamed_frames:
            return None
        return _FramesView(self)

    def get_frame(self, frame_idx: int):
        """The processor's pixel_values (3,S,S) of a frame, on the inference device."""
        frame_idx = self._check_index(frame_idx, "frame_idx", None)
        if self.streaming:
            if frame_idx not in self.streamed_frames:
                raise ValueError(f"frame_idx: expected a streamed frame still kept ({sorted(self.streamed_frames)}), "
                                 f"got {frame_idx}")
            frame = jnp.transpose(self.streamed_frames[frame_idx], (2, 0, 1))
        else:
            if frame_idx >= len(self.video):
                raise ValueError(f"frame_idx: expected a frame index in [0, {len(self.video) - 1}], got {frame_idx}")
            from .. import processing

            pixels, _ = processing.preprocess_images(self.video[frame_idx], size=self.image_size)
            frame = jnp.asarray(pixels[0], self.dtype)
        return frame if self.device is None else jax.device_put(frame, self.device)

    # ------------------------------------------------------------------------------------- inputs
    @property
    def point_inputs_per_obj(self) -> dict:
        """obj_idx -> frame -> {"point_coords": (1,1,K,2), "point_labels": (1,1,K)} (a read-only view)."""
        return {i: {f: {"point_coords": jnp.asarray(c)[None, None], "point_labels": jnp.asarray(lab)[None, None]}
                    for f, (c, lab) in track.point_inputs.items()} for i, track in enumerate(self._objects)}

    @property
    def mask_inputs_per_obj(self) -> dict:
        """obj_idx -> frame -> mask input (1,1,S,S) (a read-only view)."""
        return {i: {f: jnp.asarray(m[..., 0])[None, None] for f, m in track.mask_inputs.items()}
                for i, track in enumerate(self._objects)}

    def add_point_inputs(self, obj_idx: int, frame_idx: int, inputs: dict) -> None:
        """Set an object's point prompt on a frame: {"point_coords": (1,1,K,2) in model-input pixels,
        "point_labels": (1,1,K) ints 0-3}. As in transformers, mask inputs of that frame stay, and the model
        uses the prompt when the object is in `obj_with_new_inputs` (the processor sets both for you)."""
        obj_idx = self._check_index(obj_idx, "obj_idx", self.get_obj_num())
        frame_idx = self._check_frame_idx(frame_idx)
        if not isinstance(inputs, dict) or set(inputs) != {"point_coords", "point_labels"}:
            got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise ValueError(f"inputs: expected a dict with keys 'point_coords' and 'point_labels', got {got}")
        coords = np.asarray(inputs["point_coords"], np.float32)
        labels = np.asarray(inputs["point_labels"])
        if coords.ndim != 4 or coords.shape[:2] != (1, 1) or coords.shape[-1] != 2:
            raise ValueError(f"inputs['point_coords']: expected shape (1, 1, points, 2), got {coords.shape}")
        if labels.shape != coords.shape[:3]:
            raise ValueError(f"inputs['point_labels']: expected shape {coords.shape[:3]} to match point_coords, got "
                             f"{labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer) or not np.isin(labels, (0, 1, 2, 3)).all():
            raise ValueError(f"inputs['point_labels']: expected integers 0-3 (background, foreground, box corners), "
                             f"got {labels.ravel().tolist()} of dtype {labels.dtype}")
        if not np.isfinite(coords).all() or (coords < 0).any() or (coords > self.image_size).any():
            raise ValueError(f"inputs['point_coords']: expected coordinates in [0, {self.image_size}] (model-input "
                             f"pixels), got {coords.reshape(-1, 2).tolist()}")
        self._objects[obj_idx].point_inputs[frame_idx] = (coords[0, 0], labels[0, 0].astype(np.int32))

    def remove_point_inputs(self, obj_idx: int, frame_idx: int) -> None:
        """Forget an object's point prompt on a frame (nothing happens if it has none)."""
        obj_idx = self._check_index(obj_idx, "obj_idx", self.get_obj_num())
        frame_idx = self._check_index(frame_idx, "frame_idx", self.num_frames if not self.streaming else None)
        self._objects[obj_idx].point_inputs.pop(frame_idx, None)

    def add_mask_inputs(self, obj_idx: int, frame_idx: int, inputs) -> None:
        """Set an object's mask prompt on a frame: (1,1,S,S) (or (S,S)) at the model's input size, as the
        processor makes it. As in transformers, point inputs of that frame stay."""
        obj_idx = self._check_index(obj_idx, "obj_idx", self.get_obj_num())
        frame_idx = self._check_frame_idx(frame_idx)
        mask = np.asarray(inputs)
        s = self.image_size
        if mask.shape not in ((1, 1, s, s), (s, s)):
            raise ValueError(f"inputs: expected a mask of shape (1, 1, {s}, {s}) (the model's input size), got "
                             f"{mask.shape}")
        if not (mask.dtype == bool or np.issubdtype(mask.dtype, np.number)):
            raise TypeError(f"inputs: expected a bool or numeric mask, got dtype {mask.dtype}")
        self._objects[obj_idx].mask_inputs[frame_idx] = mask.reshape(s, s, 1).astype(np.float32)

    def remove_mask_inputs(self, obj_idx: int, frame_idx: int) -> None:
        """Forget an object's mask prompt on a frame (nothing happens if it has none)."""
        obj_idx = self._check_index(obj_idx, "obj_idx", self.get_obj_num())
        frame_idx = self._check_index(frame_idx, "frame_idx", self.num_frames if not self.streaming else None)
        self._objects[obj_idx].mask_inputs.pop(frame_idx, None)

    # ------------------------------------------------------------------------------------ outputs
    @property
    def frames_tracked_per_obj(self) -> dict:
        """obj_idx -> frame -> {"reverse": bool}, the frames each object was run on (a read-only view)."""
        return {i: {f: dict(v) for f, v in track.tracked.items()} for i, track in enumerate(self._objects)}

    @property
    def output_dict_per_obj(self) -> dict:
        """obj_idx -> {"cond_frame_outputs": {frame: outputs}, "non_cond_frame_outputs": {frame: outputs}}, each
        outputs a dict of what the session keeps of that frame (a read-only view; see `get_output`)."""
        out = {}
        for i, track in enumerate(self._objects):
            cond = {f: self._outputs(i, f, True) for f in track.cond_outputs if track.cond_outputs[f] is not None}
            non_cond = {f: self._outputs(i, f, False) for f, v in track.memories.items() if v is not None}
            out[i] = {"cond_frame_outputs": cond, "non_cond_frame_outputs": non_cond}
        return out

    def get_output(self, obj_idx: int, frame_idx: int, output_key: str, is_conditioning_frame: bool = True):
        """One stored output of an object on a frame (shapes in the module's docstring), or None when the
        frame has no stored output of that kind, as in transformers."""
        obj_idx = self._check_index(obj_idx, "obj_idx", self.get_obj_num())
        frame_idx = self._check_index(frame_idx, "frame_idx", self.num_frames if not self.streaming else None)
        self._check_output_key(output_key, OUTPUT_KEYS)
        outputs = self._outputs(obj_idx, frame_idx, bool(is_conditioning_frame))
        if outputs is None:
            return None
        if output_key not in outputs:
            kept = sorted(outputs)
            hint = "" if is_conditioning_frame else "; tracked frames keep their masks with keep_memory_archive=True"
            raise ValueError(f"output_key: {output_key!r} is not kept for {'conditioning' if is_conditioning_frame else 'tracked'} "
                             f"frames (sam2_jax keeps {kept}{hint})")
        value = outputs[output_key]
        return value if self.device is None or not isinstance(value, jax.Array) else jax.device_put(value, self.device)

    def store_output(self, obj_idx: int, frame_idx: int, output_key: str | None = None, output_value=None,
                     is_conditioning_frame: bool = True) -> None:
        """Store one output (`output_key`) or a dict of them (`output_key=None`) for an object on a frame.
        Later calls use it as transformers does: a stored memory/pointer is attended to by later frames, a
        stored conditioning mask is replayed. A single key needs the frame's outputs to exist already; a
        dict may start them (conditioning frames need all four of "pred_masks", "object_score_logits",
        "object_pointer", "maskmem_features"; tracked frames the last two, a mask and score optional). "maskmem_pos_enc" and
        "high_res_masks" are accepted in a dict and not kept (the first follows from the config)."""
        obj_idx = self._check_index(obj_idx, "obj_idx", self.get_obj_num())
        frame_idx = self._check_index(frame_idx, "frame_idx", self.num_frames if not self.streaming else None)
        cond = bool(is_conditioning_frame)
        if output_key is None:
            if not isinstance(output_value, dict):
                raise TypeError(f"output_value: expected a dict of outputs when output_key is None, got "
                                f"{type(output_value).__name__}")
            for key in output_value:
                self._check_output_key(key, OUTPUT_KEYS, "output_value")
            values = {k: v for k, v in output_value.items() if k in _STORABLE}
        else:
            self._check_output_key(output_key, _STORABLE)
            values = {output_key: output_value}
        current = self._outputs(obj_idx, frame_idx, cond) or {}
        merged = {**{k: current[k] for k in _STORABLE if k in current}, **values}
        # A tracked frame's mask and score are optional, but kept as a pair.
        needed = _STORABLE if cond or "pred_masks" in merged or "object_score_logits" in merged else _STORABLE[2:]
        missing = [k for k in needed if k not in merged]
        if missing:
            raise ValueError(f"output_key: frame {frame_idx} has no stored {'conditioning' if cond else 'tracked'} "
                             f"outputs for object index {obj_idx} yet; give them all as a dict (missing {missing})")
        converted = self._convert_outputs(merged)  # every check before the first change
        track = self._objects[obj_idx]
        memory = (converted["maskmem_features"], converted["object_pointer"])
        masks = (converted["pred_masks"], converted["object_score_logits"]) if "pred_masks" in converted else None
        if cond:
            track.cond_outputs[frame_idx] = masks
            track.cond_memories[frame_idx] = memory
        else:
            track.memories[frame_idx] = memory
            if masks is not None:
                track.tracked_outputs[frame_idx] = masks
        self._write_slot(obj_idx, frame_idx, cond, memory)

    def _write_slot(self, obj_idx: int, frame_idx: int, cond: bool, memory) -> None:
        """Put a stored memory in the device slot that holds its frame (or a free conditioning slot), so the
        bank agrees with the host; frames not in the slots are loaded from the host when a frame needs them."""
        planner, state = self._planner, self._state
        if planner is None or obj_idx >= len(planner.cond_frames):
            return
        frames = planner.cond_frames[obj_idx] if cond else planner.ring_frames[obj_idx]
        if frame_idx in frames:
            slot = frames.index(frame_idx)
        elif cond and len(frames) < planner.shape.cond_capacity:
            slot = len(frames)
            planner.commit_cond(obj_idx, slot, frame_idx)
        else:
            return
        features, pointers = ((state.cond_features, state.cond_pointers) if cond
                              else (state.recent_features, state.recent_pointers))
        features = features.at[obj_idx, slot].set(jnp.asarray(memory[0], features.dtype))
        pointers = pointers.at[obj_idx, slot].set(jnp.asarray(memory[1], pointers.dtype))
        self._state = (state._replace(cond_features=features, cond_pointers=pointers) if cond
                       else state._replace(recent_features=features, recent_pointers=pointers))

    # ---------------------------------------------------------------------------------- internals
    def _outputs(self, obj_idx: int, frame_idx: int, cond: bool) -> dict | None:
        track = self._objects[obj_idx]
        memory = (track.cond_memories if cond else track.memories).get(frame_idx)
        stored = (track.cond_outputs if cond else track.tracked_outputs).get(frame_idx)
        if stored is None and (cond or memory is None):
            return None
        out = {}
        if stored is not None:
            out["pred_masks"] = jnp.asarray(stored[0], jnp.float32)[None, None]
            out["object_score_logits"] = jnp.full((1, 1, 1), stored[1], jnp.float32)
        if memory is not None:
            features, pointer = memory
            features = jnp.asarray(features)
            out["maskmem_features"] = features[None] if self._memory_batch_first else features[:, None, :]
            out["object_pointer"] = jnp.asarray(pointer, jnp.float32)[None, None]
        return out

    def _convert_outputs(self, values: dict) -> dict:
        """transformers-shaped outputs -> the session's own, checked."""
        out = {}
        s = self.image_size // 4
        if "pred_masks" in values:
            masks = np.asarray(values["pred_masks"], np.float32)
            if masks.shape != (1, 1, s, s):
                raise ValueError(f"output_value['pred_masks']: expected shape (1, 1, {s}, {s}), got {masks.shape}")
            out["pred_masks"] = masks[0, 0]
        if "object_score_logits" in values:
            score = np.asarray(values["object_score_logits"], np.float32)
            if score.size != 1:
                raise ValueError(f"output_value['object_score_logits']: expected shape (1, 1, 1), got {score.shape}")
            out["object_score_logits"] = float(score.reshape(()))
        tokens, memory_dim, pointer_dim, dtype = self._memory_layout()
        features = np.asarray(jnp.asarray(values["maskmem_features"], dtype))
        layout = (1, tokens, memory_dim) if self._memory_batch_first else (tokens, 1, memory_dim)
        if features.shape not in (layout, (tokens, memory_dim)):
            raise ValueError(f"output_value['maskmem_features']: expected shape {layout} (transformers' layout), "
                             f"got {features.shape}")
        pointer = np.asarray(values["object_pointer"], np.float32)
        if pointer.size != pointer_dim or pointer.ndim not in (1, 2, 3):
            raise ValueError(f"output_value['object_pointer']: expected shape (1, 1, {pointer_dim}), got "
                             f"{pointer.shape}")
        out["maskmem_features"] = features.reshape(tokens, memory_dim)
        out["object_pointer"] = pointer.reshape(-1)
        return out

    def _memory_layout(self) -> tuple[int, int, int, np.dtype]:
        """(tokens, memory channels, pointer width, feature dtype) of this session's memories: from its bank,
        else a stored one."""
        if self._state is not None:
            _, _, tokens, memory_dim = self._state.cond_features.shape
            return tokens, memory_dim, self._state.cond_pointers.shape[-1], self._state.cond_features.dtype
        for track in self._objects:
            for memory in (*track.cond_memories.values(), *track.memories.values()):
                if memory is not None:
                    return (*memory[0].shape, memory[1].shape[-1], memory[0].dtype)
        raise ValueError("store_output: the session has not run the model yet, so the memory's shape is unknown; "
                         "run the model on a frame first")

    @staticmethod
    def _check_output_key(key, allowed, name: str = "output_key"):
        if not isinstance(key, str) or key not in allowed:
            raise ValueError(f"{name}: expected one of {list(allowed)}, got {key!r}")

    @staticmethod
    def _check_index(value, name: str, upper: int | None) -> int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
        if value < 0 or (upper is not None and value >= upper):
            bound = "[0, ...)" if upper is None else f"[0, {upper - 1}]" if upper else "none (there is none yet)"
            raise ValueError(f"{name}: expected an index in {bound}, got {int(value)}")
        return int(value)
