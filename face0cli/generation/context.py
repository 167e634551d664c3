"""A loaded model with what turns a face spec into an embedding for it (paper §2.2): the library, the embedder."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from face0cli.errors import EmbedderMismatch
from face0cli.generation.generate import Face, resolve_face


class ModelContext:
    """A Face0Pipeline loaded from a directory or hub id, the character library, and the model's face embedder.

    `face(spec)` resolves what `--face` takes (a character name, a photo, random[:SEED], none) to a Face for
    this model; the embedder is built on first use only.

    Args:
        model: a face0 model directory or hub id (None or empty: the embedded default model).
        device, dtype: where and in which precision the model runs (fp32, fp16, bf16).
        store: the character library (a FaceStore or its path); None: the user's default library.
        embedder_weights: InceptionResnetV1 weights for photos (faces.resolve_weights order).
        pipe: an already loaded pipeline to use instead of loading MODEL (tests, the Python API).
    """

    def __init__(
        self,
        model: str | None,
        device: str = "cpu",
        dtype: str = "fp32",
        store: Any = None,
        embedder_weights: Path | None = None,
        *,
        pipe: Any = None,
    ) -> None:
        from face0cli.library.store import FaceStore, default_store_path

        if pipe is None:
            from face0cli.console import quiet_model_loading
            from face0cli.model.pipeline import Face0Pipeline

            if not model:  # the embedded default model
                from face0cli.synthetic.default import default_model

                model = str(default_model())
            quiet_model_loading()
            model = str(Path(model).resolve()) if Path(model).exists() else model
            pipe = Face0Pipeline.load(model, device=device, dtype=dtype)
        self.model = model or ""
        self.pipe = pipe
        self.store = store if isinstance(store, FaceStore) else FaceStore(store or default_store_path())
        self.weights = embedder_weights
        self._embedder: Any = None
        self._model_hash: str | None = None

    @property
    def embedder_id(self) -> str:
        return self.pipe.face0_config.embedder_id

    @property
    def model_hash(self) -> str:
        """The A1111 `Model hash` of a local model directory (its UNet weights' sha256[:10]), "" otherwise."""
        if self._model_hash is None:
            from face0cli.generation.a1111 import model_hash

            self._model_hash = model_hash(self.model) if self.model and Path(self.model).is_dir() else ""
        return self._model_hash

    def png_text(self) -> dict[str, str]:
        """save_png's keyword arguments for this model's A1111 text (embedder id, model hash)."""
        return {"embedder_id": self.embedder_id, "model_hash": self.model_hash}

    def steps(self, asked: int | None = None) -> int:
        """Sampling steps: ASKED, else the steps the model was measured at (face0.json), else face0's default."""
        if asked is not None:
            return asked
        from face0cli.config import SAMPLE_DEFAULTS

        return getattr(self.pipe.face0_config, "steps", None) or SAMPLE_DEFAULTS.steps

    @property
    def dim(self) -> int:
        return self.pipe.face0_config.embed_dim

    def embedder(self) -> Any:
        """The face embedder the model was trained with (its id must match the model's)."""
        if self._embedder is None:
            from face0cli.faces.registry import embedder_for_model

            local = Path(self.model) if self.model and Path(self.model).is_dir() else None
            self._embedder = embedder_for_model(self.embedder_id, local, weights=self.weights)
        return self._embedder

    def embed_photo(self, path: Path) -> tuple[Any, dict[str, Any]]:
        """(embedding (D,), provenance) of the largest face in the photo at PATH."""
        from face0cli.faces.embedders import embed_photo

        r = embed_photo(self.embedder(), path)
        return r.vector, r.to_json()

    def face(self, spec: str | None) -> Face:
        """The Face for a --face spec: a character name, a photo path, random[:SEED], none (or None)."""
        return resolve_face(
            spec,
            store=self.store,
            model_embedder_id=self.embedder_id,
            model_dim=self.dim,
            gmm=self.pipe.gmm,
            embed_photo=self.embed_photo,
            examples=self.examples(),
        )

    def examples(self) -> Any:
        """The model's example characters (characters.h5 in its directory), or None: names the user's library
        does not have are looked up there."""
        return example_characters(self.model)


def example_characters(model: str | None) -> Any:
    """The example characters (a FaceStore) of MODEL (a directory; None or "": the embedded default model, if
    it is installed), or None when it has none."""
    from face0cli.library.store import FaceStore
    from face0cli.synthetic.package import EXAMPLES

    if not model:
        from face0cli.synthetic.default import DEFAULT_MODEL_DIR

        model = str(DEFAULT_MODEL_DIR)
    path = Path(model) / EXAMPLES if Path(model).is_dir() else None
    return FaceStore(path) if path is not None and path.is_file() else None


def check_free(paths: list[Path], force: bool) -> None:
    """BadInput when one of PATHS exists and FORCE is not given: nothing is overwritten by surprise."""
    from face0cli.errors import BadInput

    for p in paths:
        if p.exists() and not force:
            raise BadInput(f"{p} exists already; use --force to replace it.")


def batch_key(req: Any, batch: int) -> tuple[Any, str] | None:
    """What images of REQ share with the others of one batched pipeline call (its sampler settings and negative
    prompt), or None when it renders whole, one image at a time: BATCH 1, variety noise or extra inputs."""
    from face0cli.generation.generate import Inputs

    if batch == 1 or req.sample.variety or req.inputs != Inputs():
        return None
    return (req.sample, req.negative)


def render_all(
    ctx: ModelContext,
    reqs: list[Any],
    paths: list[list[Path]],
    show_progress: bool = True,
    batch: int = 1,
    sink: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Render requests with one progress bar and save every image with its parameters (paths[i][j]: image j of
    request i; an empty list keeps the images in memory only). Returns one result per image, with its PIL image,
    in request order; each is appended to SINK (when given) as soon as its image is saved, so a caller whose
    later call fails still knows which images were written.

    BATCH > 1 renders up to that many images in one pipeline call (generate.render_batch): consecutive images
    of one request (image j at seed + j), or of consecutive requests with the same sampler settings and inputs.
    Each keeps its own seeded generator, so it is the image of batch 1 up to float rounding (at most 1/255 in a
    few pixels); its PNG says the batch size ("batch"). Variety noise or extra inputs render one at a time."""
    from face0cli.console import progress
    from face0cli.generation.generate import check_batch, render, render_batch, save_png

    check_batch(batch)
    # a request that cannot batch renders whole (its inputs read once); the others' images are grouped into runs
    # of single-image requests that one batched call takes
    groups: list[list[tuple[Any, list[Path], int, Any]]] = []  # (request, its paths, image index, that image)
    keys: list[Any] = []  # what the images of each group share; None: a whole request
    for req, req_paths in zip(reqs, paths):
        key = batch_key(req, batch)
        if key is None:
            groups.append([(req, req_paths, -1, req)])
            keys.append(None)
            continue
        for i in range(req.n):
            if keys and keys[-1] == key and len(groups[-1]) < batch:
                groups[-1].append((req, req_paths, i, req.replace(n=1, seed=req.seed + i)))
            else:
                groups.append([(req, req_paths, i, req.replace(n=1, seed=req.seed + i))])
                keys.append(key)
    results: list[dict[str, Any]] = [] if sink is None else sink
    total = sum(r.n * r.sample.steps for r in reqs)
    with progress() as bar:
        task = bar.add_task("generating", total=total, visible=show_progress)
        for group, key in zip(groups, keys):
            step = functools.partial(bar.advance, task)  # once per image and step
            if key is None:
                ((req, req_paths, _, _),) = group
                done = [
                    ((req, req_paths, i, req), (image, info)) for i, image, info in render(ctx.pipe, req, on_step=step)
                ]
            else:
                done = list(zip(group, render_batch(ctx.pipe, [one for *_, one in group], on_step=step)))
            for (req, req_paths, i, _), (image, info) in done:
                params = req.params(i) | {"model": ctx.model}
                path = save_png(image, params | info, req_paths[i], **ctx.png_text()) if req_paths else None
                results.append(
                    {
                        "path": str(path) if path else None,
                        "seed": params["seed"],
                        "face": req.face.label,
                        "prompt": req.prompt,
                        **info,
                        "image": image,
                    }
                )
    return results


THUMBNAIL_PROMPT = "a photo of a person in a grey shirt on a grey background"
"""The prompt of a rendered library thumbnail (random and mixed characters have no photo to crop)."""


def render_thumbnail(ctx: ModelContext, vector: Any, embedder_id: str, *, seed: int = 0, steps: int = 20) -> Any:
    """A portrait of a face (PIL image at the model's size) for its library thumbnail, or None when the face is
    not of the model's embedder (the model cannot draw it)."""
    from face0cli.config import SampleConfig
    from face0cli.generation.generate import Face, Request

    if embedder_id != ctx.embedder_id or len(vector) != ctx.dim:
        return None
    req = Request(
        prompt=THUMBNAIL_PROMPT, face=Face(vector, "thumbnail"), seed=seed, sample=SampleConfig(steps=steps),
        model=ctx.model,
    )  # fmt: skip
    return render_all(ctx, [req], [[]], show_progress=False)[0]["image"]


def generate(
    model: Any,
    prompt: str,
    face: Any = None,
    *,
    seed: int = 0,
    n: int = 1,
    sample: Any = None,
    negative: str = "",
    store: Any = None,
    device: str = "cpu",
    dtype: str = "fp32",
    embedder_weights: Path | None = None,
) -> list[Any]:
    """N images of PROMPT with FACE (paper §2.2), image i at seed + i: what `face0 generate` makes, in memory.

    Args:
        model: a face0 model directory or hub id, a loaded Face0Pipeline, or a ModelContext.
        face: a --face spec (a character name in STORE, a photo, random[:SEED], none), a library Character,
            a (D,) embedding, or None (no face).
        sample: the sampler's settings (SampleConfig); default the paper's.

    Returns:
        PIL images; each carries its parameters when saved with generation.generate.save_png(image, params, path).
    """
    import numpy as np

    from face0cli.config import SampleConfig
    from face0cli.generation.generate import Request, face_from_vector, render

    if isinstance(model, ModelContext):
        ctx = model
    elif hasattr(model, "face0_config"):
        ctx = ModelContext(None, store=store, pipe=model)
    else:
        ctx = ModelContext(model, device, dtype, store, embedder_weights)
    if face is None or isinstance(face, str):
        resolved = ctx.face(face)
    elif hasattr(face, "vector") and hasattr(face, "embedder_id"):  # a Character
        if face.embedder_id != ctx.embedder_id or face.dim != ctx.dim:
            raise EmbedderMismatch(
                f"character '{face.name}' is a {face.dim}-d face of {face.embedder_id}, but the model takes "
                f"{ctx.dim}-d faces of {ctx.embedder_id}."
            )
        resolved = face_from_vector(face.vector, face.name, {"character": face.name})
    else:
        resolved = face_from_vector(np.asarray(face), "vector", {"vector": True})
    req = Request(prompt, resolved, seed, n, sample or SampleConfig(), negative, ctx.model)
    return [image for _, image, _ in render(ctx.pipe, req)]
