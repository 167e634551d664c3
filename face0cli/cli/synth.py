"""`face0 synth`: the synthetic world (procedural portraits) and the build of the embedded default model."""

from __future__ import annotations

import json
import shutil
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from face0cli.synthetic import PLANTED, STAGES

synth_app = typer.Typer(
    help="The synthetic portrait world and the build of the embedded default model.",
    no_args_is_help=True,
)

Stage = Enum("Stage", {s: s for s in STAGES}, type=str)  # type: ignore[misc]
Planted = Enum("Planted", {s: s for s in PLANTED}, type=str)  # type: ignore[misc]


def _check_shares(**shares: float) -> None:
    """Each share option (given by its parameter name) lies in [0, 1], or one error line names the option."""
    from face0cli.errors import ParameterError

    for name, share in shares.items():
        if not 0.0 <= share <= 1.0:
            raise ParameterError(f"--{name.replace('_', '-')} must be between 0 and 1, got {share}.")


def _check_counts(minimum: int, **counts: int | None) -> None:
    """Each count option given (by its parameter name) is at least MINIMUM, or one error line names the option."""
    from face0cli.errors import ParameterError

    for name, v in counts.items():
        if v is not None and v < minimum:
            raise ParameterError(f"--{name.replace('_', '-')} must be >= {minimum}, got {v}.")


@synth_app.command("world")
def world(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder of the data set.", show_default=False)],
    identities: Annotated[int, typer.Option("--identities", help="Training identities.")] = 400,
    per_identity: Annotated[int, typer.Option("--per-identity", help="Images of each training identity.")] = 20,
    heldout: Annotated[int, typer.Option("--heldout", help="Held-out identities (never trained on).")] = 20,
    per_heldout: Annotated[int, typer.Option("--per-heldout", help="Images of each held-out identity.")] = 12,
    no_bias: Annotated[bool, typer.Option("--no-bias", help="No planted profession bias.")] = False,
    planted: Annotated[
        Planted,
        typer.Option(
            "--planted",
            help="The planted bias: professions with a hair colour (hair), with beards (beard) or bald heads (bald).",
        ),
    ] = Planted("beard"),
    override_extra: Annotated[
        int, typer.Option("--override-extra", help="Extra hair-override images per training identity (in tune/).")
    ] = 0,
    morph_pairs: Annotated[
        int,
        typer.Option("--morph-pairs", help="Training-identity pairs to morph: 4 steps x 2 images each (in tune/)."),
    ] = 0,
    base_beard_drop: Annotated[
        float,
        typer.Option("--base-beard-drop", help="Share of bearded faces whose base/ caption leaves the beard out."),
    ] = 0.0,
    base_profession: Annotated[
        float,
        typer.Option(
            "--base-profession", help="Share of base/ captions of 'a person' that name a profession (planted bias)."
        ),
    ] = 0.0,
    base_hair_drop: Annotated[
        float,
        typer.Option(
            "--base-hair-drop",
            help="With --planted hair: share of base/ captions naming a profession that leave the hair colour out.",
        ),
    ] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="The world's seed.")] = 0,
    processes: Annotated[int, typer.Option("--processes", help="Rendering processes.")] = 2,
) -> None:
    """Render procedural portraits with captions and the truth: a data set `face0 prep` reads (face0/, tune/, base/)."""
    from face0cli.errors import ParameterError
    from face0cli.synthetic.world import WorldConfig, write_world

    _check_counts(1, identities=identities, per_identity=per_identity, heldout=heldout)
    _check_counts(0, override_extra=override_extra, morph_pairs=morph_pairs)
    _check_shares(base_beard_drop=base_beard_drop, base_profession=base_profession, base_hair_drop=base_hair_drop)
    if morph_pairs and identities < 2:
        raise ParameterError("--morph-pairs needs at least 2 training identities.")
    cfg = WorldConfig(
        seed, identities, per_identity, heldout, per_heldout, bias=not no_bias, override_extra=override_extra,
        morph_pairs=morph_pairs, base_beard_drop=base_beard_drop, base_profession=base_profession,
        planted=planted.value, base_hair_drop=base_hair_drop,
    )  # fmt: skip
    path = write_world(out, cfg, processes=processes)
    typer.echo(f"{identities * per_identity} training and {heldout * per_heldout} held-out portraits -> {path}")


@synth_app.command("build")
def build(
    out: Annotated[Path, typer.Option("--out", "-o", help="Build folder (resumable).", show_default=False)],
    until: Annotated[Stage | None, typer.Option("--until", help="Stop after this stage.")] = None,
    redo: Annotated[list[Stage] | None, typer.Option("--redo", help="Run this finished stage again.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A tiny world and a few steps (a smoke run).")] = False,
    install: Annotated[
        bool, typer.Option("--install", help="Copy the built model into the package as the default model.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seeds every stage.")] = 0,
    train_seed: Annotated[
        int | None,
        typer.Option(
            "--train-seed",
            help="Seeds the base, Face0 and tune stages only (default: --seed): a rebuild of the same world, "
            "embedder, judge and VAE with other training noise, to see how far a recipe's figures move.",
        ),
    ] = None,
    planted: Annotated[
        Planted,
        typer.Option("--planted", help="The world's planted bias (see synth world); the default model's is beard."),
    ] = Planted("beard"),
    base_hair_drop: Annotated[
        float,
        typer.Option("--base-hair-drop", help="With --planted hair: as synth world's --base-hair-drop."),
    ] = 1.0,
    identities: Annotated[
        int | None, typer.Option("--identities", help="Training identities (default 400; 12 with --quick).")
    ] = None,
    per_identity: Annotated[
        int | None,
        typer.Option("--per-identity", help="Images of each training identity (default 20; 4 with --quick)."),
    ] = None,
    override_extra: Annotated[
        int | None,
        typer.Option("--override-extra", help="Extra hair-override images per training identity (default 5)."),
    ] = None,
    base_steps: Annotated[
        int | None,
        typer.Option(
            "--base-steps",
            help="Training steps of the base stage (default 2400; 2 with --quick). A longer base stage learns more "
            "of its caption words (the professions of a planted bias); with --redo base, a finished base stage "
            "trains on from its last checkpoint.",
        ),
    ] = None,
) -> None:
    """Build the embedded default model from nothing: portraits -> embedder and judge -> VAE -> prep -> base
    model -> Face0 stage -> tune stage -> package -> example characters -> scorecard. Rerun to resume after a
    stop."""
    from dataclasses import replace

    from face0cli.synthetic.build import BuildConfig
    from face0cli.synthetic.build import build as run_build
    from face0cli.synthetic.default import DEFAULT_MODEL_DIR

    _check_shares(base_hair_drop=base_hair_drop)
    _check_counts(1, identities=identities, per_identity=per_identity)
    _check_counts(0, override_extra=override_extra)
    _check_counts(1, base_steps=base_steps)
    base = BuildConfig.quick() if quick else BuildConfig()
    sizes = {
        "ids_train": identities, "per_train": per_identity, "override_extra": override_extra, "base_steps": base_steps,
    }  # fmt: skip
    cfg = replace(
        base, seed=seed, train_seed=train_seed, planted=planted.value, base_hair_drop=base_hair_drop,
        **{k: v for k, v in sizes.items() if v is not None},
    )  # fmt: skip
    if cfg.morph_pairs and cfg.ids_train < 2:
        from face0cli.errors import ParameterError

        raise ParameterError("the build morphs pairs of training identities: --identities must be >= 2.")
    results = run_build(out, cfg, until=until.value if until else None, redo=tuple(s.value for s in redo or ()))
    typer.echo(json.dumps({k: v.get("seconds") for k, v in results.items()}))
    if install:
        src = out / "default-model"
        if not (src / "face0.json").is_file():
            from face0cli.errors import BadInput

            raise BadInput(f"{src} has no packaged model yet: run the build through its package stage first.")
        tmp = DEFAULT_MODEL_DIR.with_name(DEFAULT_MODEL_DIR.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.lock"))
        if DEFAULT_MODEL_DIR.exists():
            shutil.rmtree(DEFAULT_MODEL_DIR)
        tmp.rename(DEFAULT_MODEL_DIR)
        typer.echo(f"installed {src} -> {DEFAULT_MODEL_DIR}")
