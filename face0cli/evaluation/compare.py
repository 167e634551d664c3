"""Two evaluation runs side by side (`face0 eval compare`): per setting, judge and metric, with B - A."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from face0cli.errors import BadInput
from face0cli.evaluation.metrics import Stat
from face0cli.evaluation.report import stat_at
from face0cli.evaluation.spec import DASH, FORMAT, FORMAT_VERSION, METRICS, TAGS
from face0cli.generation.generate import read_text_file

if TYPE_CHECKING:
    from rich.table import Table


def read_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a results.json written by run_eval (or the folder holding it).

    Raises:
        BadInput: missing, not JSON, or not a face0 eval result.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    text = read_text_file(p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{p}, line {e.lineno}: not valid JSON ({e.msg}).") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadInput(f"{p} is not a results.json written by face0 eval.")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise BadInput(f"{p} was written by a newer face0 eval (format {data['format_version']}); upgrade face0.")
    return data


def compare(a_json: str | os.PathLike[str], b_json: str | os.PathLike[str]) -> tuple[Table, dict[str, Any]]:
    """Two eval results side by side per setting, judge and metric, with B − A (paper Table 1 layout).

    Settings are paired by name; when the two runs share no name but each has exactly one setting, those two are
    paired. Scopes compared: over all prompts and per tag, plus best of N over all prompts.

    Args:
        a_json, b_json: results.json files (or their folders).

    Returns:
        (a rich Table, a dict {"a", "b", "rows": [{setting, judge, scope, metric, a, b, diff}], "only_in_a",
        "only_in_b", "warnings"}); a and b are {mean, std, n}, diff is b.mean - a.mean or None.
    """
    from rich.table import Table
    from rich.text import Text

    a, b = read_results(a_json), read_results(b_json)
    a_settings = [s["name"] for s in a["spec"]["settings"]]
    b_settings = [s["name"] for s in b["spec"]["settings"]]
    pairs = [(s, s) for s in a_settings if s in b_settings]
    if not pairs and len(a_settings) == len(b_settings) == 1:
        pairs = [(a_settings[0], b_settings[0])]
    paired_a, paired_b = {p[0] for p in pairs}, {p[1] for p in pairs}
    a_judges = {j["name"]: j for j in a["judges"]}
    b_judges = {j["name"]: j for j in b["judges"]}
    judges = [n for n in a_judges if n in b_judges]
    warnings = []
    if a.get("clip") != b.get("clip"):
        warnings.append(
            f"the runs measured text alignment with different CLIP models ({a.get('clip')} vs {b.get('clip')})."
        )
    for n in judges:
        if a_judges[n]["id"] != b_judges[n]["id"]:
            warnings.append(f"the judge '{n}' used different networks ({a_judges[n]['id']} vs {b_judges[n]['id']}).")
        if a_judges[n].get("conditioning_encoder") or b_judges[n].get("conditioning_encoder"):
            warnings.append(
                f"the judge '{n}' is a conditioning encoder in at least one run; its face scores are inflated."
            )
    for part in ("identities", "prompts", "seeds"):
        if a["spec"][part] != b["spec"][part]:
            warnings.append(f"the runs used different {part}, so differences mix the models with the protocol.")
    if not judges:
        warnings.append("the runs share no judge, so no face scores are compared.")
    tags = [t for t in TAGS if any(p["tag"] == t for p in a["spec"]["prompts"] + b["spec"]["prompts"])]
    rows: list[dict[str, Any]] = []
    for sa, sb in pairs:
        label = sa if sa == sb else f"{sa} / {sb}"
        for judge in judges:
            for scope in ["all", *(f"tag:{t}" for t in tags)]:
                for metric in METRICS:
                    rows.append(_compare_row(label, judge, scope, metric, a["aggregates"], b["aggregates"], sa, sb))
            for metric in METRICS:
                row = _compare_row(label, judge, "all", metric, a["best_of_n"], b["best_of_n"], sa, sb)
                rows.append(row | {"scope": f"best of {len(a['spec']['seeds'])}/{len(b['spec']['seeds'])}"})
            for metric in ("paste", "identified"):
                row = _compare_row(label, judge, "all", metric, a["aggregates"], b["aggregates"], sa, sb)
                if row["a"]["n"] or row["b"]["n"]:
                    rows.append(row)
    table = Table(title=f"face0 eval compare: A = {a_json}  B = {b_json}", title_justify="left")
    for col in ("setting", "judge", "scope", "metric", "A", "B", "B − A"):
        table.add_column(col, justify="right" if col in ("A", "B", "B − A") else "left")
    for r in rows:
        diff = r["diff"]
        colour = "white" if diff is None or diff == 0 else "green" if diff > 0 else "red"
        shown = Text(DASH if diff is None else f"{diff:+.3f}", style="" if diff is None else colour)
        table.add_row(r["setting"], r["judge"], r["scope"], r["metric"], Stat.from_json(r["a"]).fmt(),
                      Stat.from_json(r["b"]).fmt(), shown)  # fmt: skip
    result = {
        "a": str(a_json),
        "b": str(b_json),
        "rows": rows,
        "only_in_a": [s for s in a_settings if s not in paired_a],
        "only_in_b": [s for s in b_settings if s not in paired_b],
        "warnings": warnings,
    }
    return table, result


def _compare_row(
    label: str, judge: str, scope: str, metric: str, a: Mapping[str, Any], b: Mapping[str, Any], sa: str, sb: str
) -> dict[str, Any]:
    x, y = stat_at(a, sa, judge, scope, metric), stat_at(b, sb, judge, scope, metric)
    diff = None if x.mean is None or y.mean is None else y.mean - x.mean
    return {"setting": label, "judge": judge, "scope": scope, "metric": metric, "a": x.to_json(),
            "b": y.to_json(), "diff": diff}  # fmt: skip
