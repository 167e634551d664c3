"""The face0 command line: each command parses its options, calls one library function and shows the result.

The commands live in one module per group over shared options (cli/options.py): characters (embed, mix,
character ...), generating (generate, debias), evaluating (eval run, eval compare); prep, train and fit-gmm
are here. Heavy libraries (torch, diffusers, facenet-pytorch) are imported inside the commands that need them,
so `face0 --help` and `face0 character list` start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from face0cli import __version__
from face0cli.cli import characters, evaluating, generating
from face0cli.cli.group import Face0Group
from face0cli.cli.options import EmbedderWeightsOpt, JsonOpt, SeedOpt, is_main_process, print_json
from face0cli.cli.synth import synth_app
from face0cli.config import TrainMode
from face0cli.console import console

app = typer.Typer(
    cls=Face0Group,
    name="face0",
    help="Put a face into generated images from one photo and a prompt (Face0, Valevski et al. 2023).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_is_main_process = is_main_process
_print_json = print_json


def _version(value: bool) -> None:
    if value:
        typer.echo(f"face0 {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Put a face into generated images from one photo and a prompt (Face0, Valevski et al. 2023)."""


app.command()(characters.embed)
app.command()(characters.mix)
app.command()(generating.generate)
app.command()(generating.debias)
app.add_typer(characters.character_app, name="character")
app.add_typer(evaluating.eval_app, name="eval")
app.add_typer(synth_app, name="synth")


# ----------------------------------------------------------------------------------------- prep and train


@app.command()
def prep(
    dataset: Annotated[
        list[str],
        typer.Argument(
            help="A folder of images + .txt/.json captions, .tar shards (files, a glob or a folder), "
            "or a .csv/.parquet table.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The triplet file to write (HDF5).", show_default=False)],
    shard: Annotated[
        str | None, typer.Option("--shard", help="i/N: prepare only shard i of N (a part file beside --out).")
    ] = None,
    merge: Annotated[
        int | None, typer.Option("--merge", help="Merge the N part files of a sharded prep into --out, then stop.")
    ] = None,
    image_column: Annotated[str, typer.Option("--image-column", help="Table column with image paths.")] = "image",
    caption_column: Annotated[str, typer.Option("--caption-column", help="Table column with captions.")] = "caption",
    score_column: Annotated[
        str | None, typer.Option("--score-column", help="Column / JSON field with a score, e.g. aesthetics.")
    ] = None,
    min_score: Annotated[
        float | None, typer.Option("--min-score", help="Keep pairs whose score is >= this (the paper: 5.5).")
    ] = None,
    min_face: Annotated[int, typer.Option("--min-face", help="Drop images whose largest face is smaller (px).")] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Faces per embedder call.")] = 32,
    no_resume: Annotated[
        bool, typer.Option("--no-resume", help="Start over instead of continuing a stopped run.")
    ] = False,
    latents: Annotated[
        str | None, typer.Option("--latents", help="Also store VAE latents of this model (training skips the encoder).")
    ] = None,
    resolution: Annotated[int, typer.Option("--resolution", help="Training resolution of --latents (px).")] = 512,
    device: Annotated[
        str, typer.Option("--device", help="auto (each process its own GPU, else CPU), cpu, cuda:N.")
    ] = "auto",
    embedder_spec: Annotated[
        str | None,
        typer.Option(
            "--embedder",
            help="facenet (InceptionResnetV1, VGGFace2), a synthetic embedder folder, or a face0 model with one.",
        ),
    ] = None,
    embedder_weights: EmbedderWeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Turn image-caption data into (face, embedding, caption) triplets for training (paper §2.1, §2.3).

    Under `accelerate launch` (or torchrun) each process takes its own shard and the main process merges them.
    """
    from face0cli.config import PrepConfig
    from face0cli.data.prep import merge_parts
    from face0cli.data.prep import prep as run_prep
    from face0cli.data.readers import open_dataset, parse_shard

    if merge is not None:
        summary = merge_parts(out, merge)
    else:
        ds = open_dataset(
            dataset if len(dataset) > 1 else dataset[0],
            image_column=image_column,
            caption_column=caption_column,
            score_column=score_column,
            min_score=min_score,
        )
        from face0cli.config import CropConfig
        from face0cli.faces.registry import open_embedder

        if device == "auto":  # under accelerate launch each process takes its own GPU
            import os

            import torch

            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        embedder = open_embedder(
            embedder_spec, weights=embedder_weights, device=device, cfg=CropConfig(min_face=min_face)
        )
        summary = run_prep(
            ds,
            out,
            embedder,
            PrepConfig(min_face=min_face),
            parse_shard(shard) if shard else None,
            resume=not no_resume,
            batch_size=batch_size,
            encode_latents=_latent_encoder(latents, resolution, device) if latents else None,
            show_progress=not as_json,
        )
    if not _is_main_process():
        return
    if as_json:
        _print_json(summary.to_dict())
    else:
        console.print(summary.table())


def _latent_encoder(model: str, resolution: int, device: str) -> Any:
    from face0cli.console import quiet_model_loading
    from face0cli.errors import ParameterError
    from face0cli.training.train import VaeLatentEncoder

    quiet_model_loading()

    if resolution < 8 or resolution % 8:
        raise ParameterError(f"--resolution must be a positive multiple of 8, got {resolution}.")
    return VaeLatentEncoder(model, resolution, device)


@app.command()
def train(
    triplets: Annotated[
        Path, typer.Option("--triplets", "-t", help="The triplet file from face0 prep.", show_default=False)
    ],
    base: Annotated[
        str,
        typer.Option("--base", help="An SD 1.x diffusers directory or hub id, or a face0 model.", show_default=False),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: checkpoints/, validation/, logs/, model/.")],
    mode: Annotated[
        TrainMode, typer.Option("--train", help="unet (the paper), lora, or projector only.")
    ] = TrainMode.unet,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Optimizer steps in total.")] = 10_000,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Per process; the paper's 256 = this x accum x GPUs.")
    ] = 16,
    accum: Annotated[int, typer.Option("--grad-accum", help="Gradient accumulation steps.")] = 1,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate (paper: 2e-5).")] = 2e-5,
    warmup: Annotated[int, typer.Option("--warmup", help="Warm-up steps of the learning rate.")] = 500,
    resolution: Annotated[int, typer.Option("--resolution", help="Training image size (px).")] = 512,
    mixed_precision: Annotated[str, typer.Option("--mixed-precision", help="no, fp16 or bf16.")] = "no",
    gradient_checkpointing: Annotated[
        bool, typer.Option("--gradient-checkpointing", help="Trade compute for memory.")
    ] = False,
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Keep an EMA of the weights (paper: 0.9999).")] = True,
    ema_decay: Annotated[float, typer.Option("--ema-decay", help="EMA decay.")] = 0.9999,
    face_drop: Annotated[
        float, typer.Option("--face-drop", help="Probability of zeroing the face tokens (paper: 0.1).")
    ] = 0.1,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", help="Steps between checkpoints (0: none).")
    ] = 500,
    validate_every: Annotated[
        int, typer.Option("--validate-every", help="Steps between validation grids (0: none).")
    ] = 500,
    workers: Annotated[int, typer.Option("--workers", help="DataLoader workers per process.")] = 4,
    lora_rank: Annotated[int, typer.Option("--lora-rank", help="LoRA rank (--train lora).")] = 16,
    lr_scheduler: Annotated[
        str, typer.Option("--lr-scheduler", help="constant_with_warmup, constant, linear, cosine, ...")
    ] = "constant_with_warmup",
    text_drop: Annotated[
        float, typer.Option("--text-drop", help="Probability of the empty caption (training from scratch).")
    ] = 0.0,
    train_text_encoder: Annotated[
        bool, typer.Option("--train-text-encoder", help="Train the text encoder too (a base model's stage).")
    ] = False,
    snr_gamma: Annotated[float, typer.Option("--snr-gamma", help="Min-SNR loss weighting (0: plain MSE).")] = 0.0,
    projector_normalize: Annotated[
        bool,
        typer.Option("--projector-normalize", help="Unit-variance input and LayerNorm'd tokens in a new projector."),
    ] = False,
    projector_lr: Annotated[
        float, typer.Option("--projector-lr", help="The projector's own learning rate (0: --lr).")
    ] = 0.0,
    projector_hidden_dim: Annotated[
        int, typer.Option("--projector-hidden-dim", help="Hidden width of a new projector (paper: 768).")
    ] = 768,
    identity_pattern: Annotated[
        str,
        typer.Option(
            "--identity-pattern",
            help="Regex over the triplet keys naming the identity (its first group): each example is then "
            "conditioned on another image of the same person.",
        ),
    ] = "",
    reference_exclude: Annotated[
        str,
        typer.Option(
            "--reference-exclude",
            help="Regex over the captions: matching images never condition another (with --identity-pattern).",
        ),
    ] = "",
    mix_pattern: Annotated[
        str,
        typer.Option(
            "--mix-pattern",
            help="Regex over the keys with groups a, b, t (percent): such an image of a face between identities "
            "a and b is conditioned on their embeddings mixed at t (with --identity-pattern).",
        ),
    ] = "",
    gmm_covariance: Annotated[
        str, typer.Option("--gmm-covariance", help="Covariance of the random-face GMM: diag, full, tied, spherical.")
    ] = "diag",
    gmm_components: Annotated[
        int, typer.Option("--gmm-components", help="Most GMM components tried (chosen by BIC).")
    ] = 8,
    log_every: Annotated[int, typer.Option("--log-every", help="Steps between log rows.")] = 10,
    seed: SeedOpt = 0,
    resume: Annotated[str | None, typer.Option("--resume", help="latest, or a checkpoint folder.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train the UNet and the face projector jointly on triplets (paper §2.1, §2.3). Scales with accelerate launch."""
    from face0cli.config import TrainConfig
    from face0cli.console import quiet_model_loading
    from face0cli.training.train import train as run_train

    quiet_model_loading()

    cfg = TrainConfig(
        train=mode.value,
        max_steps=max_steps,
        batch_size=batch_size,
        gradient_accumulation_steps=accum,
        lr=lr,
        lr_warmup_steps=warmup,
        resolution=resolution,
        mixed_precision=mixed_precision,
        gradient_checkpointing=gradient_checkpointing,
        use_ema=ema,
        ema_decay=ema_decay,
        face_drop=face_drop,
        checkpoint_every=checkpoint_every,
        validate_every=validate_every,
        num_workers=workers,
        lora_rank=lora_rank,
        lr_scheduler=lr_scheduler,
        text_drop=text_drop,
        train_text_encoder=train_text_encoder,
        snr_gamma=snr_gamma,
        projector_normalize=projector_normalize,
        projector_lr=projector_lr,
        projector_hidden_dim=projector_hidden_dim,
        identity_pattern=identity_pattern,
        reference_exclude=reference_exclude,
        mix_pattern=mix_pattern,
        gmm_covariance=gmm_covariance,
        gmm_max_components=gmm_components,
        log_every=log_every,
        seed=seed,
    )
    result = run_train(cfg, triplets=triplets, out=out, base=base, resume=resume, show_progress=not as_json)
    if not _is_main_process():
        return
    if as_json:
        _print_json(result.to_dict())
    else:
        loss = "n/a" if result.loss is None else f"{result.loss:.4f}"
        console.print(
            f"trained {result.steps} steps (loss {loss}, {result.samples_per_s:.1f} samples/s) -> {result.model_dir}"
        )


@app.command("fit-gmm")
def fit_gmm(
    model: Annotated[Path, typer.Argument(help="A local face0 model directory.", show_default=False)],
    source: Annotated[
        Path,
        typer.Option("--from", help="A triplet file (face0 prep) or a character library.", show_default=False),
    ],
    min_components: Annotated[int, typer.Option("--min-components", help="Fewest mixture components.")] = 1,
    max_components: Annotated[int, typer.Option("--max-components", help="Most mixture components.")] = 8,
    covariance: Annotated[str, typer.Option("--covariance", help="diag, full, tied or spherical.")] = "diag",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Fit the model's GMM of faces (paper §3.1) to embeddings, the number of components chosen by BIC.

    Random characters, `--face random:SEED` and `face0 debias` sample from it. face0 train fits one to its
    training faces; this refits it, e.g. to a larger triplet file or to a library of characters.
    """
    from face0cli.config import GMMConfig
    from face0cli.errors import BadInput, EmbedderMismatch, ModelError
    from face0cli.library.face_space import FaceGMM
    from face0cli.model.pipeline import FACE0_JSON, GMM_DIR, Face0Config

    if not (model / FACE0_JSON).is_file():
        raise ModelError(f"{model} is not a local face0 model directory (no {FACE0_JSON}).")
    cfg = Face0Config.load(model / FACE0_JSON)
    x, embedder_id = _embeddings_of(source, cfg.embedder_id)
    if embedder_id != cfg.embedder_id or x.shape[1] != cfg.embed_dim:
        raise EmbedderMismatch(
            f"{source} holds {x.shape[1]}-d embeddings of {embedder_id}, but the model takes {cfg.embed_dim}-d "
            f"embeddings of {cfg.embedder_id}."
        )
    if len(x) < 2:
        raise BadInput(f"{source} has {len(x)} embedding(s) of the model's embedder; a GMM needs at least 2.")
    gmm_cfg = GMMConfig(min_components, max_components, covariance, seed)
    gmm = FaceGMM.fit(x, gmm_cfg, embedder_id=embedder_id)
    gmm.save(model / GMM_DIR)
    out = {
        "gmm": str(model / GMM_DIR),
        "n_train": len(x),
        "n_components": gmm.n_components,
        "identity": gmm.identity,
        "bic": gmm.bic,
    }
    if as_json:
        _print_json(out)
    else:
        console.print(
            f"GMM of {len(x)} faces: {gmm.n_components} component(s) (BIC over {min_components}..{max_components}), "
            f"identity {gmm.identity} -> {model / GMM_DIR}"
        )


def _embeddings_of(source: Path, embedder_id: str) -> tuple[Any, str]:
    """(N, D) embeddings and their embedder id from a triplet file, or a library's characters of EMBEDDER_ID."""
    import numpy as np

    from face0cli.data.prep import read_triplets
    from face0cli.errors import BadInput, StoreError
    from face0cli.library.store import FaceStore

    if not source.is_file():
        raise BadInput(f"{source} does not exist or is not a file.")
    try:
        chars = FaceStore(source).list()
    except StoreError:
        with read_triplets(source) as trip:
            return trip.embeddings(), trip.embedder_id
    same = [c.vector for c in chars if c.embedder_id == embedder_id]
    if not same:
        raise BadInput(f"{source} has no characters of the embedder {embedder_id}.")
    return np.stack(same), embedder_id


def main() -> None:
    """Entry point of the `face0` console script."""
    from face0cli.locks import die_with_parent

    die_with_parent()
    app()


if __name__ == "__main__":
    main()
