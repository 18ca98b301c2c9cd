"""Every class, method and argument that transformers' SAM2 Video documentation lists (its seven classes, with
the methods it documents) exists in sam2_jax under the same name (`forward` is `__call__`)."""

import dataclasses
import inspect

import transformers
from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor as HFV
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession as HFS
import sam2_jax

GENERIC = {"self", "kwargs", "args", "transformers_version", "architectures", "output_hidden_states", "return_dict",
           "dtype", "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type"}
# The seven classes of the documentation page and the methods it lists (autodoc), the session's all.
classes = {"Sam2VideoConfig": transformers.Sam2VideoConfig,
           "Sam2VideoMaskDecoderConfig": transformers.Sam2VideoMaskDecoderConfig,
           "Sam2VideoPromptEncoderConfig": transformers.Sam2VideoPromptEncoderConfig,
           "Sam2VideoProcessor": transformers.Sam2VideoProcessor, "Sam2VideoVideoProcessor": HFV,
           "Sam2VideoInferenceSession": HFS, "Sam2VideoModel": transformers.Sam2VideoModel}
methods = {"Sam2VideoProcessor": ["__call__", "post_process_masks", "init_video_session",
                                  "add_inputs_to_inference_session"],
           "Sam2VideoVideoProcessor": ["__call__", "post_process_masks"],
           "Sam2VideoInferenceSession": ["obj_id_to_idx", "obj_idx_to_id", "get_obj_num", "add_point_inputs",
                                         "remove_point_inputs", "add_mask_inputs", "remove_mask_inputs", "store_output",
                                         "get_output", "add_new_frame", "get_frame", "reset_tracking_data",
                                         "reset_inference_session"],
           "Sam2VideoModel": ["forward", "propagate_in_video_iterator", "get_image_features"]}
ours_alias = {"forward": "__call__"}


def documented_names() -> list[tuple[str, str, bool]]:
    """(name, kind, present in sam2_jax) for each documented class, method and argument."""
    rows = []

    def params(f):
        return [p for p in inspect.signature(f).parameters if p not in GENERIC]

    for name, cls in classes.items():
        ours = getattr(sam2_jax, name, None)
        rows.append((name, "class", ours is not None))
        if name.endswith("Config"):
            fields = {f.name for f in dataclasses.fields(ours)} if ours else set()
            rows += [(f"{name}({p})", "argument", p in fields) for p in params(cls)]
            continue
        init_args = [] if name == "Sam2VideoVideoProcessor" else params(cls.__init__)  # **kwargs only there
        rows += [(f"{name}({p})", "argument", ours is not None and p in inspect.signature(ours.__init__).parameters)
                 for p in init_args]
        for m in methods.get(name, []):
            mine = getattr(ours, ours_alias.get(m, m), None) if ours else None
            rows.append((f"{name}.{m}", "method", mine is not None))
            if m == "__call__" and name in ("Sam2VideoProcessor", "Sam2VideoVideoProcessor"):
                continue  # **kwargs in transformers
            rows += [(f"{name}.{m}({p})", "argument", mine is not None and p in inspect.signature(mine).parameters)
                     for p in params(getattr(cls, m))]
    return rows


def test_every_documented_name_exists():
    rows = documented_names()
    missing = [name for name, _, present in rows if not present]
    print(f"DOCUMENTED NAMES: {len(rows) - len(missing)} of {len(rows)} exist")
    assert not missing, missing
