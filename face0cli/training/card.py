"""The model card (README.md) of a trained face0 model directory, in diffusers' model card convention (paper §2.3).

A Hugging Face model card is Markdown with a YAML front matter; diffusers' training scripts fill it with
huggingface_hub's ModelCardData (library_name: diffusers, base_model, license, tags) and
diffusers.utils.hub_utils.populate_model_card. This module does the same for a face0 model: the front matter,
then what it was trained from and on (base model, data, steps, the face embedder and token positions), how
to use it, and the latest validation grid, copied into the directory so the link works on the Hub too.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from face0cli.errors import BadInput, ModelError

CARD = "README.md"
VALIDATION_IMAGE = "validation.png"
TAGS: tuple[str, ...] = (
    "face0",
    "stable-diffusion",
    "stable-diffusion-diffusers",
    "text-to-image",
    "diffusers",
    "face-conditioning",
)
PAPER = "Face0: Instantaneously Conditioning a Text-to-Image Model on a Face (Valevski et al., 2023)"


@dataclass
class CardInfo:
    """What a face0 model card says (paper §2.3 training facts).

    Attributes:
        base_model: the SD 1.x base it was trained from (hub id or path; a path's last part goes in the YAML).
        embedder_id: the face embedder of the projector's input; embed_dim its dimension D.
        token_positions: the context positions the face tokens overwrite (74, 75, 76).
        steps: optimizer steps trained.
        data: what it was trained on (a triplets file, a dataset name).
        n_examples: triplets in the data, if known.
        training: other training facts shown as a table (lr, batch, face drop, EMA, ...).
        validation_image: a validation grid (copied in as validation.png), or None.
        license: the SPDX-like license id for the YAML (SD 1.x: creativeml-openrail-m), or None.
        tags: extra tags after face0's.
        name: the card's title (default: the directory's name).
    """

    base_model: str
    embedder_id: str
    embed_dim: int
    steps: int
    token_positions: Sequence[int] = (74, 75, 76)
    data: str = ""
    n_examples: int | None = None
    training: Mapping[str, Any] = field(default_factory=dict)
    validation_image: Path | None = None
    license: str | None = "creativeml-openrail-m"
    tags: Sequence[str] = ()
    name: str = ""


def _hub_base(base: str) -> str:
    """A hub id stays; a local path becomes its last part (the YAML's base_model names a Hub model)."""
    p = base.rstrip("/\\")
    if p.count("/") == 1 and not p.startswith((".", "/", "~")) and not Path(p).exists():
        return p
    return Path(p).name or p


def render_model_card(info: CardInfo, model_dir: str | os.PathLike[str] = ".") -> str:
    """The README.md text: YAML front matter (library_name: diffusers, base_model, tags), then the card body.

    Args:
        info: the facts.
        model_dir: the directory the card describes (its name is the default title; the image link is relative).
    """
    from diffusers.utils.hub_utils import populate_model_card
    from huggingface_hub import ModelCard, ModelCardData

    title = info.name or Path(model_dir).resolve().name
    data = ModelCardData(
        license=info.license,
        library_name="diffusers",
        base_model=_hub_base(info.base_model),
        pipeline_tag="text-to-image",
        inference=False,  # Face0Pipeline is face0's own pipeline class, not one the Hub's widget runs
    )
    positions = ", ".join(str(i) for i in info.token_positions)
    rows = [
        ("Base model", f"`{info.base_model}`"),
        ("Data", (f"`{info.data}`" if info.data else "not recorded") + (
            f" ({info.n_examples:,} image-caption-face triplets)" if info.n_examples is not None else "")),
        ("Steps", f"{info.steps:,}"),
        ("Face embedder", f"`{info.embedder_id}` ({info.embed_dim}-d)"),
        ("Face tokens", f"3 context tokens at positions {positions} of 77"),
    ]  # fmt: skip
    rows += [(str(k), f"`{v}`") for k, v in info.training.items()]
    table = "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])
    body = f"""
# {title}

A face0 model: Stable Diffusion 1.x fine-tuned to take a face as a second condition, after {PAPER}.
A face photo's embedding is projected to {len(info.token_positions)} context tokens that overwrite the last
positions of the CLIP text context; sampling mixes text and face guidance (paper §2.2) at the cost of the base
model. No per-person fine-tuning is needed.

## How to use

```bash
face0 embed photo.jpg --name alice          # with the face embedder named below
face0 generate --model {title} --face alice --prompt "a photo of a person on a beach"
```

```python
from face0cli.model.pipeline import Face0Pipeline

pipe = Face0Pipeline.from_pretrained("{title}")
image = pipe("a photo of a person", face_embedding, w=7.5, c=1.0).images[0]
```

The directory is a diffusers pipeline directory (unet/, vae/, text_encoder/, tokenizer/, scheduler/) plus
projector/, face0.json and gmm/; its UNet, VAE and text encoder also load with diffusers alone, and
`face0cli.model.embeds.face_prompt_embeds` gives the prompt embeddings any diffusers SD 1.x pipeline takes.

## Training details

Trained as in paper §2.3: UNet and projector jointly, VAE and text encoder frozen, the projected face zeroed
for a share of the examples so the model also learns "no face".

{table}
"""
    if info.validation_image is not None:
        body += f"""
## Validation

Prompts (rows) x faces (columns, the last without a face), at a fixed seed, after the last validation step:

![validation grid]({VALIDATION_IMAGE})
"""
    body += """
## Limitations and bias

The model inherits the base model's biases and those of its training faces; the face embedder decides which
traits of a face are kept. Use it only with faces of people who agreed to it.
"""
    card = populate_model_card(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"), tags=[*TAGS, *info.tags])
    return str(card)


def write_model_card(model_dir: str | os.PathLike[str], info: CardInfo) -> Path:
    """Write MODEL_DIR/README.md (and copy the validation grid in as validation.png); returns the card's path.

    Raises:
        BadInput: MODEL_DIR is not a directory, or the validation image does not exist.
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise BadInput(f"{d} is not a model directory.")
    if info.validation_image is not None:
        src = Path(info.validation_image)
        if not src.is_file():
            raise BadInput(f"the validation image {src} does not exist.")
        dst = d / VALIDATION_IMAGE
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
    text = render_model_card(info, d)
    path = d / CARD
    tmp = d / f".{CARD}.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def card_info_from_export(model_dir: str | os.PathLike[str], validation_image: Path | None = None) -> CardInfo:
    """The card facts of a directory written by face0's training export (training.json, train_config.json, face0.json).

    Raises:
        ModelError: face0.json or training.json is missing or malformed.
    """
    d = Path(model_dir)
    try:
        face0 = json.loads((d / "face0.json").read_text(encoding="utf-8"))
        training = json.loads((d / "training.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{d} has no readable face0.json and training.json ({e}).") from e
    cfg_path = d / "train_config.json"
    cfg: dict[str, Any] = {}
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except ValueError:
            cfg = {}
    facts: dict[str, Any] = {}
    for key, label in (
        ("train", "Trained"),
        ("lr", "Learning rate"),
        ("resolution", "Resolution"),
        ("face_drop", "Face dropout"),
        ("use_ema", "EMA"),
        ("ema_decay", "EMA decay"),
        ("mixed_precision", "Mixed precision"),
    ):
        if key in cfg:
            facts[label] = cfg[key]
    for key, label in (("effective_batch", "Effective batch"), ("processes", "Processes")):
        if key in training:
            facts[label] = training[key]
    try:
        return CardInfo(
            base_model=str(training.get("base", "")),
            embedder_id=str(face0["embedder_id"]),
            embed_dim=int(face0["embed_dim"]),
            token_positions=tuple(int(i) for i in face0.get("token_positions", (74, 75, 76))),
            steps=int(training.get("steps", 0)),
            data=Path(str(training["triplets"])).name if training.get("triplets") else "",
            n_examples=_triplet_rows(training.get("triplets")),
            training=facts,
            validation_image=validation_image,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{d / 'face0.json'} is missing or has a malformed field ({e}).") from e


def _triplet_rows(path: Any) -> int | None:
    """The number of triplets in a triplets file (its `rows` attribute), or None when it cannot be read."""
    if not path or not Path(str(path)).is_file():
        return None
    try:
        import h5py

        with h5py.File(str(path), "r") as f:
            return int(f.attrs["rows"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


__all__ = ["CARD", "TAGS", "CardInfo", "card_info_from_export", "render_model_card", "write_model_card"]
