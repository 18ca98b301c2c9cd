"""Masks of a still image out: the writers of `sam2-jax segment`, in the original `scripts/amg.py` layouts.

They are `MaskWriter`s (temporary name, rename on close, the overwrite rule) that take one image's records
at once, `save(image, records)`, instead of a video's frames one by one.
"""

from __future__ import annotations

import json

import numpy as np

from .writers import MaskWriter, PromptMark, draw_overlay, rle_encode

CSV_HEADER = ("id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,stability_score,"
              "crop_box_x0,crop_box_y0,crop_box_w,crop_box_h")  # the original scripts/amg.py's metadata.csv


class PngFolderWriter(MaskWriter):
    """scripts/amg.py's folder: `0.png, 1.png...`, one mask each (255 on it, 0 elsewhere), and metadata.csv,
    one row per mask (point_input: the first of point_coords, empty if none)."""

    is_folder = True

    def save(self, image: np.ndarray, records: list[dict]) -> None:
        """Write the masks and their metadata into the temporary folder (renamed on close)."""
        from PIL import Image

        rows = [CSV_HEADER]
        for i, record in enumerate(records):
            Image.fromarray(record["segmentation"].astype(np.uint8) * 255).save(self._tmp / f"{i}.png")
            point = record["point_coords"][0] if record["point_coords"] else ["", ""]
            rows.append(",".join(map(str, [i, record["area"], *record["bbox"], *point, record["predicted_iou"],
                                           record["stability_score"], *record["crop_box"]])))
        (self._tmp / "metadata.csv").write_text("\n".join(rows))


class CocoRecordsWriter(MaskWriter):
    """One JSON file: the records, each segmentation a COCO compressed RLE (the generator's "coco_rle"). A score
    that is NaN (the stability of a mask with no pixel above -offset) is written as null: JSON has no NaN."""

    def save(self, image: np.ndarray, records: list[dict]) -> None:
        """Write the records into the temporary file (renamed on close)."""
        entries = [{**record, "segmentation": rle_encode(record["segmentation"]),
                    **{key: None for key in ("predicted_iou", "stability_score") if np.isnan(record[key])}}
                   for record in records]
        self._tmp.write_text(json.dumps(entries, allow_nan=False))


class OverlayPngWriter(MaskWriter):
    """One PNG: the image with mask i drawn in the colour of id i + 1 (`writers.draw_overlay`), and the prompts."""

    def __init__(self, out, *, prompts: list[PromptMark] = (), overwrite: bool = False):
        super().__init__(out, overwrite=overwrite)
        self.prompts = list(prompts)

    def save(self, image: np.ndarray, records: list[dict]) -> None:
        """Draw the masks and prompts on the image into the temporary file (renamed on close)."""
        from PIL import Image

        masks = np.stack([r["segmentation"] for r in records]) if records else np.zeros((0, *image.shape[:2]), bool)
        overlay = draw_overlay(image, list(range(1, len(records) + 1)), masks, self.prompts)
        Image.fromarray(overlay).save(self._tmp, format="PNG")


IMAGE_WRITERS = {"png": PngFolderWriter, "coco": CocoRecordsWriter, "overlay": OverlayPngWriter}
