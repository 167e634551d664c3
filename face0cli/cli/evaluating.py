"""`face0 eval run` and `face0 eval compare`: the paper's evaluation protocol (§4.1-4.3) from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from face0cli.cli.group import DefaultCommandGroup
from face0cli.cli.options import (
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    EmbedderWeightsOpt,
    JsonOpt,
    ModelOpt,
    StoreOpt,
    check_writable,
    open_store,
    print_json,
)
from face0cli.console import console

# the judges face0 registers itself (evaluation.judges.JUDGES; a test keeps the two in step), named here so
# that `face0 eval --help` imports no judge code
BUILTIN_JUDGES = ("clip-face", "dlib", "facenet", "synthetic")

eval_app = typer.Typer(
    cls=DefaultCommandGroup,
    help="Score a model with the paper's protocol (§4.1-4.3), or compare two runs. "
    "`face0 eval SPEC --out DIR` is short for `face0 eval run SPEC --out DIR`.",
    no_args_is_help=True,
)


@eval_app.command("run")
def run(
    spec: Annotated[Path, typer.Argument(help="A YAML/JSON benchmark spec.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder of the run.", show_default=False)],
    judge: Annotated[
        list[str] | None,
        typer.Option(
            "--judge",
            help=f"Score with this judge instead of the spec's (repeatable). Registered: {', '.join(BUILTIN_JUDGES)}.",
            show_default=False,
        ),
    ] = None,
    model: ModelOpt = None,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Regenerate every image.")] = False,
    batch: BatchOpt = 1,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "fp32",
    store: StoreOpt = None,
    embedder_weights: EmbedderWeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Render, score and report: text, face and overall alignment, best-of-N (paper §4.1-4.3).

    Writes results.json, table.md (Table 1's shape) and contact_sheet.png into OUT; a stopped run resumes.
    """
    from face0cli.console import quiet_model_loading, warn

    check_writable(out, folder=True)
    from face0cli.evaluation.runner import run_eval

    quiet_model_loading()
    res = run_eval(
        spec,
        out,
        model=model,
        device=device,
        dtype=dtype,
        store=open_store(store).path,
        embedder_weights=embedder_weights,
        judges=judge or None,
        resume=not no_resume,
        show_progress=not as_json,
        on_warning=warn,
        batch=batch,
    )
    if as_json:
        print_json(res.to_json())
        return
    console.print(
        f"{len(res.images)} images ({res.generated} new, {res.reused} reused, {res.rescored} rescored)\n"
        f"table: {res.table_md}\nresults: {res.results_json}\ncontact sheet: {res.contact_sheet}"
    )
    console.print(Path(res.table_md).read_text(encoding="utf-8"), markup=False, highlight=False)


@eval_app.command("compare")
def compare(
    a: Annotated[Path, typer.Argument(help="results.json of the first run.", show_default=False)],
    b: Annotated[Path, typer.Argument(help="results.json of the second run.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Print two runs side by side with the differences (B - A)."""
    from face0cli.console import warn
    from face0cli.evaluation.compare import compare as compare_runs

    table, data = compare_runs(a, b)
    if as_json:
        print_json(data)
        return
    console.print(table)
    for w in data.get("warnings", []):
        warn(w)
