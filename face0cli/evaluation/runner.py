"""`run_eval`: render, score and report an evaluation spec (Face0 §4.1-4.3), resumable through a journal."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from face0cli import __version__
from face0cli.config import CropConfig
from face0cli.errors import BadInput, EmbedderMismatch, NoFaceFound
from face0cli.evaluation.judges import (
    Clip,
    Detector,
    FaceFinder,
    Judge,
    JudgeContext,
    check_judge_name,
    conditioning_warning,
    is_conditioning_encoder,
    make_judge,
)
from face0cli.evaluation.metrics import aggregate, best_of_n_table, score_image
from face0cli.evaluation.report import render_table_md, write_contact_sheet
from face0cli.evaluation.spec import (
    EXTRA_METRICS,
    FORMAT,
    FORMAT_VERSION,
    KEY_VERSION,
    METRICS,
    EvalSpec,
    IdentitySpec,
    JudgeSpec,
    PromptSpec,
    SettingSpec,
    load_spec,
    local_or_id,
)
from face0cli.faces.images import file_sha256, load_image
from face0cli.generation.generate import Face, Request, check_batch, render_batch, save_png

if TYPE_CHECKING:
    from face0cli.faces.embedders import Embedder


@dataclass
class EvalResults:
    """What `run_eval` wrote: every image's scores, the aggregates and the report files.

    Attributes:
        images: one dict per image (parameters, path relative to out_dir, scores), in spec order.
        aggregates: [setting][judge][scope][metric] -> {mean, std, n}; scopes "all", "tag:T", "identity:I",
            "group:G"; metrics text, face, overall, paste, face_other, found (the share of images with a face),
            identified (the identification rate among the run's identities).
        best_of_n: [setting][judge][scope][metric] -> {mean, std, n} of the best seed per (identity, prompt);
            scopes "all" and "tag:T".
        judges: [{name, id, encoder_id, conditioning_encoder, primary}].
        warnings: one sentence each (e.g. a judge that is the conditioning encoder).
        generated, reused, rescored: images rendered now, taken from an earlier run, rescored from their PNG.
    """

    out_dir: Path
    spec: EvalSpec
    images: list[dict[str, Any]]
    aggregates: dict[str, Any]
    best_of_n: dict[str, Any]
    judges: list[dict[str, Any]]
    clip: str | None
    warnings: list[str]
    models: dict[str, str]
    generated: int = 0
    reused: int = 0
    rescored: int = 0
    contact_sheet_layout: dict[str, Any] = field(default_factory=dict)

    @property
    def results_json(self) -> Path:
        return self.out_dir / "results.json"

    @property
    def table_md(self) -> Path:
        return self.out_dir / "table.md"

    @property
    def contact_sheet(self) -> Path:
        return self.out_dir / "contact_sheet.png"

    def to_json(self) -> dict[str, Any]:
        """The content of results.json."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "face0_version": __version__,
            "spec": self.spec.to_json(),
            "models": self.models,
            "clip": self.clip,
            "judges": self.judges,
            "primary_judge": self.judges[0]["name"] if self.judges else None,
            "seeds_per_group": len(self.spec.seeds),
            "warnings": self.warnings,
            "counts": {
                "images": len(self.images),
                "generated": self.generated,
                "reused": self.reused,
                "rescored": self.rescored,
            },  # fmt: skip
            "aggregates": self.aggregates,
            "best_of_n": self.best_of_n,
            "contact_sheet": self.contact_sheet_layout,
            "images": self.images,
        }


@dataclass(frozen=True)
class ResolvedIdentity:
    """An identity resolved for a run: its reference photos and how it conditions."""

    spec: IdentitySpec
    references: tuple[Path, ...]
    ref_sha256: tuple[str, ...]
    character: Any = None  # store Character, when a character conditions

    @property
    def used(self) -> int | None:
        """Index of the conditioning photo in references; None when a character conditions."""
        return None if self.spec.character is not None else self.spec.condition


@dataclass(frozen=True)
class _Job:
    setting: SettingSpec  # already resolved for the prompt's tag
    identity: ResolvedIdentity
    prompt_index: int
    prompt: PromptSpec
    seed: int
    model: str


def run_eval(
    spec: EvalSpec | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    model: str | None = None,
    device: str = "cpu",
    dtype: str = "fp32",
    store: Any = None,
    embedder_weights: str | os.PathLike[str] | None = None,
    pipe_loader: Callable[[str], Any] | None = None,
    embedder_loader: Callable[[str], Embedder] | None = None,
    clip_loader: Callable[[str], Clip] | None = None,
    detector: Detector | None = None,
    judges: Sequence[str] | None = None,
    resume: bool = True,
    show_progress: bool = True,
    on_warning: Callable[[str], None] | None = None,
    batch: int = 1,
) -> EvalResults:
    """Run the paper's evaluation (Face0 §4.1-4.3): render, score, aggregate, report (Tables 1-2).

    Every (setting x identity x prompt x seed) image is rendered at the setting's parameters (tag overrides
    applied; up to BATCH images of one setting in one batched call, generate.render_batch) and saved in
    out_dir/images/SETTING/ with its parameters; each is scored and appended to out_dir/results.jsonl at once.
    Then out_dir/results.json, table.md and contact_sheet.png are written.

    Args:
        spec: an EvalSpec or a spec file (YAML / JSON).
        out_dir: output folder (created).
        model: model of the settings that name none, overriding the spec's `model` (a directory or hub id).
        device, dtype: where the model, embedder, CLIP and judges run; the model's dtype (fp32, fp16, bf16).
        store: the character library (a FaceStore or its path) for character identities; default the user's.
        embedder_weights: InceptionResnetV1 weights for embedding reference photos (the model's embedder) and
            the facenet judge's default (faces.resolve_weights order).
        pipe_loader: model -> Face0Pipeline; default Face0Pipeline.load(model, device, dtype).
        embedder_loader: the model's embedder id -> an Embedder with that id, to embed conditioning photos;
            default the model's own (the synthetic embedder in its directory, else InceptionResnetV1 from
            embedder_weights).
        clip_loader: CLIP path or id -> Clip; default judges.load_clip.
        detector: face detector of the judges; default MTCNN.
        judges: judge names to score with instead of the spec's (each with no options); None: the spec's.
        resume: reuse the images recorded in out_dir/results.jsonl; False starts over.
        show_progress: a progress bar on stderr (shown on terminals).
        on_warning: called with each warning as soon as it is known (e.g. console.warn), besides results.warnings.
        batch: images of one setting rendered together (1: one at a time, as generate renders them). Larger is
            faster (a batch of 4 takes about half the time of 4 single images on a 2-core CPU); each image
            still has its own seeded generator, and differs from the unbatched one by float rounding only (at
            most 1/255 in a few pixels), so its score may differ in the last digits.

    Raises:
        BadInput: bad spec or photo. ModelError: no model (and no embedded default). NoFaceFound: a judge finds
        no face in a reference photo.
        EmbedderMismatch: a character or photo embedding does not fit a model. MissingWeights: CLIP or embedder
        weights are missing.
    """
    check_batch(batch)
    spec = spec if isinstance(spec, EvalSpec) else load_spec(spec)
    if judges:
        spec = dataclasses.replace(spec, judges=tuple(JudgeSpec(check_judge_name(n)) for n in dict.fromkeys(judges)))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadInput(f"{out} is a file; give a folder for the eval outputs.")
    default_model = local_or_id(Path.cwd(), model) if model else spec.model
    if not default_model and any(not s.model for s in spec.settings):  # the embedded default model
        from face0cli.synthetic.default import default_model as embedded_model

        default_model = str(embedded_model())

    # 1. Judges and CLIP first: they fail fast, before any model is loaded or image rendered.
    ctx = JudgeContext(
        device=device,
        finder=FaceFinder(detector, device=device, cfg=CropConfig()),
        clip_id=spec.clip,
        embedder_weights=embedder_weights,
        clip_loader=clip_loader,
    )
    clip = ctx.clip(spec.clip) if spec.clip else None
    judge_list = [make_judge(j.name, dict(j.options), ctx) for j in spec.judges]
    judge_info = [
        {"name": j.name, "id": j.id, "encoder_id": j.encoder_id, "conditioning_encoder": False, "primary": i == 0}
        for i, j in enumerate(judge_list)
    ]
    warnings: list[str] = []

    def warn(message: str) -> None:
        if message not in warnings:
            warnings.append(message)
            if on_warning is not None:
                on_warning(message)

    if clip is None:
        warn("text alignment is off (clip: null), so text and overall scores are not reported.")

    # 2. Reference faces, through every judge; prompts through CLIP.
    identities = _resolve_identities(spec, store)
    scorer = _Scorer.build(spec, identities, judge_list, clip)

    # 3. The jobs, grouped by model so one model is loaded at a time.
    jobs = _jobs(spec, identities, default_model)
    out.mkdir(parents=True, exist_ok=True)
    loader = pipe_loader or _default_pipe_loader(device, dtype)
    embedders = _EmbedderCache(embedder_loader, embedder_weights, device)

    records: list[dict[str, Any]] = []
    models: dict[str, str] = {}
    counts = {"generated": 0, "reused": 0, "rescored": 0}
    with _progress(show_progress) as bar, Journal.open(out / "results.jsonl", resume) as journal:
        task = bar.add_task("eval", total=sum(j.setting.sample.steps for j in jobs))
        for model_ref in dict.fromkeys(j.model for j in jobs):
            pipe = loader(model_ref)
            # settings without steps sample at the model's own (face0.json `steps`), as `face0 generate` does
            own = getattr(pipe.face0_config, "steps", None)
            mine = [j for j in jobs if j.model == model_ref]
            resolved = [dataclasses.replace(j, setting=j.setting.with_model_steps(own)) for j in mine]
            extra = sum(r.setting.sample.steps - j.setting.sample.steps for j, r in zip(mine, resolved))
            if extra:
                bar.update(task, total=(bar.tasks[0].total or 0) + extra)
            embedder_id = str(pipe.face0_config.embedder_id)
            models[model_ref] = embedder_id
            for judge, entry in zip(judge_list, judge_info):
                if is_conditioning_encoder(judge, embedder_id):
                    entry["conditioning_encoder"] = True
                    warn(conditioning_warning(judge, embedder_id))
            faces = _FaceCache(pipe, embedders)
            groups: list[list[tuple[int, _Job, _Where]]] = []  # still to render: one setting, at most `batch`
            for job in resolved:
                record, how, where = _lookup(job, out, embedder_id, journal, scorer)
                records.append(record if record is not None else {})  # {}: filled once rendered
                if record is not None:
                    bar.advance(task, job.setting.sample.steps)
                    counts[how] += 1
                elif groups and groups[-1][0][1].setting == job.setting and len(groups[-1]) < batch:
                    groups[-1].append((len(records) - 1, job, where))
                else:
                    groups.append([(len(records) - 1, job, where)])
            for group in groups:
                bar.update(task, description=f"eval {group[0][1].setting.name}")
                n = len(group)
                advance = functools.partial(bar.advance, task, 1)  # once per image and step
                done = _render_jobs([(j, w) for _, j, w in group], out, pipe, faces, journal, scorer, advance)
                for (i, _, _), record in zip(group, done):
                    records[i] = record
                counts["generated"] += n
            del pipe, faces

    # 4. Aggregates and the report.
    judge_names = [j.name for j in judge_list]
    results = EvalResults(
        out_dir=out,
        spec=spec,
        images=records,
        aggregates=aggregate(records, spec, judge_names),
        best_of_n=best_of_n_table(records, spec, judge_names),
        judges=judge_info,
        clip=clip.id if clip else None,
        warnings=warnings,
        models=models,
        generated=counts["generated"],
        reused=counts["reused"],
        rescored=counts["rescored"],
    )
    results.contact_sheet_layout = write_contact_sheet(results, identities, ctx.finder)
    _write_json(results.results_json, results.to_json())
    _write_text(results.table_md, render_table_md(results.to_json()))
    return results


# --------------------------------------------------------------------------------------------- run helpers


class Journal:
    """results.jsonl: one record per finished image, appended and synced at once, so a stopped run resumes.

    Records are found by key (the hash of an image's parameters, `job_key`); the last record of a key wins.
    """

    def __init__(self, path: Path, done: dict[str, dict[str, Any]], log: Any) -> None:
        self.path, self.done, self._log = path, done, log

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: Path, resume: bool = True) -> Iterator[Journal]:
        """The journal at PATH, its earlier records read (RESUME) or dropped (not RESUME), open for appending."""
        done = _read_journal(path) if resume else {}
        if not resume:
            path.write_text("", encoding="utf-8")
        _end_torn_line(path)
        with path.open("a", encoding="utf-8") as log:
            yield cls(path, done, log)

    def previous(self, key: str, rel: Path, out: Path) -> dict[str, Any] | None:
        """The earlier record of KEY when its image is still at out/REL, else None."""
        old = self.done.get(key)
        if old is not None and old.get("path") == rel.as_posix() and (out / rel).is_file():
            return old
        return None

    def append(self, record: Mapping[str, Any]) -> None:
        _append(self._log, record)


@dataclass
class _Scorer:
    """What every image is scored against: the judges, the reference faces, the prompts through CLIP."""

    judges: Sequence[Judge]
    ref_vecs: Mapping[str, Mapping[str, Sequence[np.ndarray]]]
    text_vecs: Mapping[str, np.ndarray]
    clip: Clip | None
    scored_with: dict[str, Any]

    @classmethod
    def build(
        cls, spec: EvalSpec, identities: Sequence[ResolvedIdentity], judges: Sequence[Judge], clip: Clip | None
    ) -> _Scorer:
        texts = [p.text for p in spec.prompts]
        text_vecs = dict(zip(texts, clip.embed_texts(texts))) if clip else {}
        scored_with = {
            "clip": clip.id if clip else None,
            "judges": {j.name: j.id for j in judges},
            "references": {i.spec.name: list(i.ref_sha256) for i in identities},
            "metrics": [*METRICS, *EXTRA_METRICS],  # a record scored before a metric existed is rescored
        }
        return cls(judges, _reference_embeddings(identities, judges), text_vecs, clip, scored_with)

    def record(self, image: Image.Image, job: _Job, base: dict[str, Any]) -> dict[str, Any]:
        """BASE (a record without scores) with the image's scores and what they were scored with."""
        scores = _score(image, job, self.judges, self.ref_vecs, self.text_vecs, self.clip)
        return base | {"scores": scores, "scored_with": self.scored_with}


class _FaceCache:
    """The conditioning face of each identity for one model, resolved on first use."""

    def __init__(self, pipe: Any, embedders: _EmbedderCache) -> None:
        self.pipe, self.embedders = pipe, embedders
        self.faces: dict[str, Face] = {}

    def get(self, identity: ResolvedIdentity) -> Face:
        name = identity.spec.name
        if name not in self.faces:
            self.faces[name] = _conditioning_face(identity, self.pipe, self.embedders)
        return self.faces[name]


def _lookup(
    job: _Job, out: Path, embedder_id: str, journal: Journal, scorer: _Scorer
) -> tuple[dict[str, Any] | None, str, _Where]:
    """An image of the run found in the journal: (its record, "reused" | "rescored", where), reused when its
    parameters and scorers are the same, rescored from its PNG when the judges, CLIP or references changed; or
    (None, "generate", where) when it is still to be rendered."""
    fingerprint = _face_fingerprint(job.identity, embedder_id)
    key = job_key(job, fingerprint)
    name = f"{job.identity.spec.name}-p{job.prompt_index:02d}-s{job.seed}-{key[:10]}.png"
    where = _Where(key, Path("images") / job.setting.name / name, fingerprint)
    old = journal.previous(key, where.rel, out)
    if old is not None and old.get("scored_with") == scorer.scored_with:
        return old, "reused", where
    if old is not None:
        record = scorer.record(
            load_image(out / where.rel), job, _record(job, key, where.rel, fingerprint, old.get("unet_calls_per_step"))
        )
        journal.append(record)
        return record, "rescored", where
    return None, "generate", where


@dataclass(frozen=True)
class _Where:
    """An image's resume key, its path under the output folder, and its face fingerprint."""

    key: str
    rel: Path
    fingerprint: dict[str, Any]


def _render_jobs(
    batch: Sequence[tuple[_Job, _Where]],
    out: Path,
    pipe: Any,
    faces: _FaceCache,
    journal: Journal,
    scorer: _Scorer,
    on_step: Callable[[], None],
) -> list[dict[str, Any]]:
    """Render jobs of one setting and model in one batched call (generate.render_batch), then save, score and
    journal each image at once; their records, in order."""
    reqs = [
        Request(
            prompt=job.prompt.text,
            face=faces.get(job.identity),
            seed=job.seed,
            n=1,
            sample=job.setting.sample,
            negative=job.setting.negative,
            model=job.model,
        )
        for job, _ in batch
    ]
    records = []
    for (job, where), req, (image, info) in zip(batch, reqs, render_batch(pipe, reqs, on_step=on_step)):
        tags: dict[str, Any] = {"key": where.key, "setting": job.setting.name, "identity": job.identity.spec.name}
        tags |= {"prompt_index": job.prompt_index, "tag": job.prompt.tag}
        save_png(image, req.params(0) | info | {"eval": tags}, out / where.rel)
        rec = _record(job, where.key, where.rel, where.fingerprint, info.get("unet_calls_per_step"))
        record = scorer.record(image, job, rec)
        journal.append(record)
        records.append(record)
    return records


def _progress(show: bool) -> Any:
    """console.progress() when asked for, else a disabled rich Progress (the same interface)."""
    from face0cli.console import progress

    if show:
        return progress()
    from rich.progress import Progress

    return Progress(disable=True)


def _default_pipe_loader(device: str, dtype: str) -> Callable[[str], Any]:
    def load(model: str) -> Any:
        from face0cli.model.pipeline import Face0Pipeline

        return Face0Pipeline.load(model, device=device, dtype=dtype)

    return load


class _EmbedderCache:
    """One embedder per embedder id, and one embedding per (embedder id, photo).

    Without a loader, a model's own embedder (faces.registry.embedder_for_model: the synthetic one from the model
    directory, InceptionResnetV1 from `weights`)."""

    def __init__(
        self, loader: Callable[[str], Embedder] | None, weights: str | os.PathLike[str] | None, device: str
    ) -> None:
        self.loader, self.weights, self.device = loader, weights, device
        self.embedders: dict[str, Embedder] = {}
        self.vectors: dict[tuple[str, Path], tuple[np.ndarray, dict[str, Any]]] = {}

    def _load(self, embedder_id: str, model_dir: str | None) -> Embedder:
        if self.loader is not None:
            return self.loader(embedder_id)
        from face0cli.faces.registry import embedder_for_model

        local = model_dir if model_dir and Path(model_dir).is_dir() else None
        return embedder_for_model(embedder_id, local, weights=self.weights, device=self.device)  # type: ignore[no-any-return]

    def embed(self, embedder_id: str, photo: Path, model_dir: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        from face0cli.faces.embedders import embed_photo

        if (embedder_id, photo) not in self.vectors:
            if embedder_id not in self.embedders:
                emb = self._load(embedder_id, model_dir)
                if emb.id != embedder_id:
                    raise EmbedderMismatch(
                        f"the model expects the embedder {embedder_id}, but the embedder given is {emb.id}."
                    )
                self.embedders[embedder_id] = emb
            result = embed_photo(self.embedders[embedder_id], photo)
            self.vectors[(embedder_id, photo)] = (result.vector, result.to_json())
        return self.vectors[(embedder_id, photo)]


def _resolve_identities(spec: EvalSpec, store: Any) -> list[ResolvedIdentity]:
    """Reference photos of each identity (a character's from the spec, else from its provenance)."""
    lib = None
    out = []
    for ident in spec.identities:
        character = None
        refs = ident.photos
        if ident.character is not None:
            if lib is None:
                lib = _open_store(store)
            character = lib.get(ident.character)
            if not refs:
                refs = _provenance_photos(character.provenance)
            if not refs:
                raise BadInput(
                    f"the identity '{ident.name}' (character '{ident.character}') has no reference photo to judge "
                    "faces against; add photos: to it in the spec."
                )
        out.append(ResolvedIdentity(ident, tuple(refs), tuple(file_sha256(p) for p in refs), character))
    return out


def _open_store(store: Any) -> Any:
    from face0cli.library.store import FaceStore, default_store_path

    if store is None:
        return FaceStore(default_store_path())
    if isinstance(store, (str, os.PathLike)):
        return FaceStore(store)
    return store


def _provenance_photos(provenance: Mapping[str, Any]) -> tuple[Path, ...]:
    """The photos a character was embedded from (face0 embed records them as sources), those that still exist."""
    sources = provenance.get("sources") if isinstance(provenance, Mapping) else None
    photos = []
    for s in sources or []:
        path = Path(str(s.get("source", ""))) if isinstance(s, Mapping) else None
        if path is not None and path.is_file():
            photos.append(path.resolve())
    return tuple(dict.fromkeys(photos))


def _reference_embeddings(
    identities: Sequence[ResolvedIdentity], judges: Sequence[Judge]
) -> dict[str, dict[str, list]]:
    """[judge][identity] -> the judge's embeddings of the identity's reference photos, in order."""
    images = {p: load_image(p) for ident in identities for p in ident.references}
    out: dict[str, dict[str, list]] = {}
    for judge in judges:
        vectors = dict(zip(images, judge.embed_faces(list(images.values()))))
        out[judge.name] = {}
        for ident in identities:
            for p in ident.references:
                if vectors[p] is None:
                    raise NoFaceFound(
                        f"the judge '{judge.name}' finds no face in {p}, a reference photo of '{ident.spec.name}'."
                    )
            out[judge.name][ident.spec.name] = [vectors[p] for p in ident.references]
    return out


def _jobs(spec: EvalSpec, identities: Sequence[ResolvedIdentity], default_model: str | None) -> list[_Job]:
    jobs = []
    for setting in spec.settings:
        model = setting.model or default_model
        assert model is not None  # checked by run_eval
        for ident in identities:
            for pi, prompt in enumerate(spec.prompts):
                for seed in spec.seeds:
                    jobs.append(_Job(setting.for_tag(prompt.tag), ident, pi, prompt, seed, model))
    order = list(dict.fromkeys(j.model for j in jobs))
    return sorted(jobs, key=lambda j: order.index(j.model))  # stable: spec order within a model


def _face_fingerprint(ident: ResolvedIdentity, embedder_id: str) -> dict[str, Any]:
    """What determines the conditioning embedding, without computing it (resume keys)."""
    if ident.character is not None:
        digest = hashlib.sha256(np.asarray(ident.character.vector, "<f4").tobytes()).hexdigest()
        return {"kind": "character", "name": ident.spec.character, "vector_sha256": digest,
                "embedder_id": ident.character.embedder_id}  # fmt: skip
    used = ident.spec.condition
    return {"kind": "photo", "photo_sha256": ident.ref_sha256[used], "embedder_id": embedder_id}


def job_key(job: _Job, fingerprint: Mapping[str, Any]) -> str:
    """Hex SHA-256 of everything that determines an image (resume key of results.jsonl)."""
    data = {
        "v": KEY_VERSION,
        "setting": job.setting.name,
        "identity": job.identity.spec.name,
        "face": dict(fingerprint),
        "prompt": job.prompt.text,
        "seed": job.seed,
        "model": job.model,
        **job.setting.params(),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _conditioning_face(ident: ResolvedIdentity, pipe: Any, embedders: _EmbedderCache) -> Face:
    """The embedding that conditions an identity under a model: its character's vector or its photo's."""
    cfg = pipe.face0_config
    if ident.character is not None:
        char = ident.character
        if char.embedder_id != cfg.embedder_id:
            raise EmbedderMismatch(
                f"character '{char.name}' was made by the embedder {char.embedder_id}, but the model expects the "
                f"embedder {cfg.embedder_id}."
            )
        vector = np.asarray(char.vector, np.float32)
        source: dict[str, Any] = {"kind": "character", "name": char.name, "character_kind": char.kind}
    else:
        photo = ident.references[ident.spec.condition]
        vector, prov = embedders.embed(str(cfg.embedder_id), photo, getattr(pipe, "name_or_path", None))
        source = {"kind": "photo", **prov}
    if vector.shape[0] != int(cfg.embed_dim):
        raise EmbedderMismatch(
            f"the face embedding of '{ident.spec.name}' has dimension {vector.shape[0]}, but the model expects "
            f"{cfg.embed_dim}."
        )
    return Face(np.array(vector, np.float32), ident.spec.name, source)


def _record(job: _Job, key: str, rel: Path, fingerprint: Mapping[str, Any], calls: Any) -> dict[str, Any]:
    return {
        "key": key,
        "path": rel.as_posix(),
        "setting": job.setting.name,
        "model": job.model,
        "identity": job.identity.spec.name,
        "group": job.identity.spec.group,
        "prompt_index": job.prompt_index,
        "prompt": job.prompt.text,
        "tag": job.prompt.tag,
        "seed": job.seed,
        "params": job.setting.params(),
        "conditioning": dict(fingerprint),
        "unet_calls_per_step": calls,
    }


def _score(
    image: Image.Image,
    job: _Job,
    judges: Sequence[Judge],
    ref_vecs: Mapping[str, Mapping[str, Sequence[np.ndarray]]],
    text_vecs: Mapping[str, np.ndarray],
    clip: Clip | None,
) -> dict[str, Any]:
    image_vec = clip.embed_images([image])[0] if clip is not None else None
    faces = {j.name: j.embed_faces([image])[0] for j in judges}
    me = job.identity.spec.name
    refs = {j.name: ref_vecs[j.name][me] for j in judges}
    rivals = {j.name: {k: v for k, v in ref_vecs[j.name].items() if k != me} for j in judges}
    return score_image(text_vecs.get(job.prompt.text), image_vec, faces, refs, job.identity.used, rivals)


def _read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """Records of results.jsonl by key (the last wins); a torn last line (a crash mid-write) is skipped."""
    if not path.is_file():
        return {}
    out: dict[str, dict[str, Any]] = {}
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("key"), str):
                out[record["key"]] = record
    return out


def _end_torn_line(path: Path) -> None:
    """End a last line cut short by a crash, so the next record starts on a line of its own."""
    if path.is_file() and path.stat().st_size:
        with path.open("rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def _append(log: Any, record: Mapping[str, Any]) -> None:
    log.write(json.dumps(record, sort_keys=True) + "\n")
    log.flush()
    os.fsync(log.fileno())


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
