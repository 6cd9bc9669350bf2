"""Image prompts on TRL's side of the seam: the dataset rows TRL reads, and the image fields of a
subset of the rows of TRL's batch.

TRL's multimodal GRPO reads a row's `prompt` (conversational) and `image` (a PIL image) and adds the
image to the prompt itself. Its generation output keeps a Qwen-VL batch's images as one tensor of
patches (`pixel_values`, every image's patches in row order), one `image_grid_thw` row per image and
`num_images` per row; scoring some of its rows again (a guide's log-probs, a replay success's
entropy) needs exactly those rows' patches.
"""

from __future__ import annotations

import torch

from npo.tasks.images import open_image
from npo.tasks.prompting import build_prompt


def dataset_row(item, style: str, index: int) -> dict:
    """The training dataset's row of `item`: its prompt, its index, the columns of a Python dataset's row
    (TRL hands them to reward functions) and, for an image prompt, the image."""
    row = {**item.meta.get("columns", {}), "prompt": build_prompt(item, style), "item_index": index}
    if item.image is not None:
        row["image"] = open_image(item.image)
    return row


def row_fields(output: dict, rows: list[int]) -> dict:
    """The image fields of TRL's generation output for `rows` (in that order); {} for text batches.
    Only the grid layout (Qwen-VL) is sliced: `npo.models.check` refuses other VLMs."""
    if "pixel_values" not in output:
        return {}
    grid, per_row = output["image_grid_thw"], list(output["num_images"])
    patches = [0] + grid.prod(-1).cumsum(0).tolist()  # patch offsets of each image
    first = [0] + torch.tensor(per_row).cumsum(0).tolist()  # first image of each row
    images = [i for r in rows for i in range(first[r], first[r] + per_row[r])]
    fields = {"pixel_values": torch.cat([output["pixel_values"][patches[i]:patches[i + 1]] for i in images]),
              "image_grid_thw": grid[images], "num_images": [per_row[r] for r in rows]}
    if "mm_token_type_ids" in output:
        fields["mm_token_type_ids"] = output["mm_token_type_ids"][rows]
    return fields
