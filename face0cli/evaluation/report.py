"""The report of an evaluation run: table.md (the shapes of the paper's Tables 1 and 2) and the contact sheet."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from PIL import Image

from face0cli.evaluation.judges import (
    FaceFinder,
)
from face0cli.evaluation.metrics import Stat
from face0cli.evaluation.spec import METRICS, TAGS, TILE
from face0cli.faces.images import load_image
from face0cli.generation.generate import save_png
from face0cli.generation.grids import make_grid

if TYPE_CHECKING:
    from face0cli.evaluation.runner import EvalResults, ResolvedIdentity


def stat_at(tree: Mapping[str, Any], *keys: str) -> Stat:
    node: Any = tree
    for k in keys:
        if not isinstance(node, Mapping) or k not in node:
            return Stat(None, None, 0)
        node = node[k]
    return Stat.from_json(node)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_table_md(results: Mapping[str, Any]) -> str:
    """table.md from results.json's content: Table 1 (rows = settings; text / face / overall per tag and over
    all prompts, mean ± std) and Table 2 (best of N against the average) per judge, then the paste indicator
    and per-identity face scores."""
    spec = results["spec"]
    settings = [s["name"] for s in spec["settings"]]
    tags = [t for t in TAGS if any(p["tag"] == t for p in spec["prompts"])]
    n_seeds = len(spec["seeds"])
    agg, best = results["aggregates"], results["best_of_n"]
    counts = results.get("counts", {})
    lines = [f"# face0 eval: {spec['name']}", ""]
    lines.append(
        f"{counts.get('images', 0)} images: {len(spec['identities'])} identities x {len(spec['prompts'])} prompts x "
        f"{n_seeds} seeds x {len(settings)} settings. Text alignment: CLIP {results.get('clip') or 'off'}. "
        f"Scores are mean ± std over images (population std)."
    )
    lines.append("")
    for w in results.get("warnings", []):
        lines.append(f"> **WARNING:** {w}")
        lines.append("")
    for judge in results["judges"]:
        name = judge["name"]
        lines.append(f"## Table 1 — judge `{name}` ({judge['id']})")
        lines.append("")
        if judge.get("conditioning_encoder"):
            lines += [
                "> **WARNING:** this judge is the model's conditioning encoder; its face scores are inflated.",
                "",
            ]
        header = ["setting"]
        for scope in [*tags, "all"]:
            header += [f"{scope} text", f"{scope} face", f"{scope} overall"]
        rows = []
        for s in settings:
            row = [s]
            for scope in [*(f"tag:{t}" for t in tags), "all"]:
                row += [stat_at(agg, s, name, scope, m).fmt() for m in METRICS]
            rows.append(row)
        lines += _md_table(header, rows) + [""]
        found = [(s, stat_at(agg, s, name, "all", "found")) for s in settings]
        lines.append(
            "Faces found in the generations (no face scores 0): "
            + ", ".join(f"{s} {st.mean:.0%} of {st.n}" for s, st in found if st.mean is not None)
            + "."
        )
        lines.append("")
        n_ids = len(spec["identities"])
        ident = [(s, stat_at(agg, s, name, "all", "identified")) for s in settings]
        if any(st.n for _, st in ident):
            lines.append(
                f"Identification (the judge's nearest of the {n_ids} identities, by mean cosine to each one's "
                "reference photos, the conditioning photo left out when there are others, is the right one; "
                f"chance {1 / n_ids:.0%}): "
                + ", ".join(f"{s} {st.mean:.0%} of {st.n}" for s, st in ident if st.mean is not None)
                + "."
            )
            lines.append("")

        lines.append(f"### Table 2 — best of N = {n_seeds} seeds against the average (judge `{name}`)")
        lines.append("")
        header = ["setting"]
        for m in METRICS:
            header += [f"{m} average", f"{m} best of {n_seeds}"]
        rows = []
        for s in settings:
            row = [s]
            for m in METRICS:
                row += [stat_at(agg, s, name, "all", m).fmt(), stat_at(best, s, name, "all", m).fmt()]
            rows.append(row)
        lines += _md_table(header, rows) + [""]

        if any(stat_at(agg, s, name, "all", "paste").n for s in settings):
            lines.append(f"### Copy-paste indicator (judge `{name}`, identities with several photos)")
            lines.append("")
            lines.append(
                "paste = similarity to the conditioning photo − mean similarity to the identity's other photos; "
                "near 0: the person is reproduced, > 0: the photo is copied."
            )
            lines.append("")
            header = ["setting", "paste", "similarity to other photos", "images"]
            rows = [
                [
                    s,
                    stat_at(agg, s, name, "all", "paste").fmt(),
                    stat_at(agg, s, name, "all", "face_other").fmt(),
                    str(stat_at(agg, s, name, "all", "paste").n),
                ]  # fmt: skip
                for s in settings
            ]
            lines += _md_table(header, rows) + [""]

        groups = list(dict.fromkeys(i.get("group") or i["name"] for i in spec["identities"]))
        grouped = any((i.get("group") or i["name"]) != i["name"] for i in spec["identities"])
        scopes = [f"group:{g}" for g in groups]
        lines.append(f"### Face alignment by {'group' if grouped else 'identity'} (judge `{name}`)")
        lines.append("")
        header = ["setting", *(sc.split(":", 1)[1] for sc in scopes)]
        rows = [[s, *(stat_at(agg, s, name, sc, "face").fmt() for sc in scopes)] for s in settings]
        lines += _md_table(header, rows) + [""]
    return "\n".join(lines)


def _tile(image: Image.Image) -> Image.Image:
    from face0cli.faces.embedders import pad_resize

    return pad_resize(image.convert("RGB"), TILE)


def write_contact_sheet(
    results: EvalResults, identities: Sequence[ResolvedIdentity], finder: FaceFinder
) -> dict[str, Any]:
    """contact_sheet.png: a row per (setting, identity) with its reference face, then a tile per (prompt, seed)
    labelled with text (T) and primary-judge face (F) scores."""
    spec = results.spec
    primary = results.judges[0]["name"]
    by_key = {(r["setting"], r["identity"], r["prompt_index"], r["seed"]): r for r in results.images}
    refs = {}
    for ident in identities:
        photo = ident.references[ident.used if ident.used is not None else 0]
        image = load_image(photo)
        face = finder.largest(image)
        refs[ident.spec.name] = _tile(finder.crop(image, face) if face is not None else image)
    tiles, labels, row_labels = [], [], []
    blank = Image.new("RGB", (TILE, TILE), (40, 40, 40))
    for setting in spec.settings:
        for member in spec.identities:
            row_labels.append(f"{setting.name} / {member.name}")
            tiles.append(refs[member.name])
            labels.append("reference")
            for pi in range(len(spec.prompts)):
                for seed in spec.seeds:
                    r = by_key.get((setting.name, member.name, pi, seed))
                    if r is None:
                        tiles.append(blank)
                        labels.append("missing")
                        continue
                    tiles.append(_tile(load_image(results.out_dir / r["path"])))
                    text = r["scores"].get("text")
                    face = r["scores"]["judges"][primary]["face"]
                    labels.append((f"T{text:.2f} " if text is not None else "") + f"F{face:.2f}")
    rows, cols = len(spec.settings) * len(spec.identities), 1 + len(spec.prompts) * len(spec.seeds)
    col_labels = ["reference"] + [f"p{pi} s{seed}" for pi in range(len(spec.prompts)) for seed in spec.seeds]
    sheet = make_grid(
        tiles,
        rows,
        cols,
        row_labels=row_labels,
        col_labels=col_labels,
        title=f"face0 eval {spec.name}: T = text alignment, F = face alignment ({primary})",
        tile=TILE,
        tile_labels=labels,
    )
    save_png(sheet, {"eval": spec.name, "rows": rows, "cols": cols, "judge": primary}, results.contact_sheet)
    return {"path": "contact_sheet.png", "rows": rows, "cols": cols, "tile": TILE,
            "row_labels": row_labels, "col_labels": col_labels}  # fmt: skip
