"""Batch generation: a JSONL file of jobs, one request per line, one result record per line (paper §2.2)."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from face0cli.config import SampleConfig
from face0cli.errors import BadInput, Face0Error
from face0cli.generation.context import ModelContext, batch_key, check_free, render_all
from face0cli.generation.generate import Inputs, Request, output_paths, parse_size, read_text_file

# field -> the JSON types it takes (bool is refused where a number belongs)
JOB_FIELDS: dict[str, tuple[type, ...]] = {
    "prompt": (str,),
    "face": (str, type(None)),
    "seed": (int,),
    "n": (int,),
    "w": (int, float),
    "c": (int, float),
    "a": (int, float),
    "variety": (int, float),
    "steps": (int,),
    "scheduler": (str,),
    "size": (str, int, type(None)),
    "negative": (str,),
    "out": (str,),
    # what `face0 generate --init/--strength/--mask/--controlnet/--control/--control-scale/--lora` give
    "init": (str,),
    "strength": (int, float),
    "mask": (str,),
    "controlnet": (str,),
    "control": (str,),
    "control_scale": (int, float),
    "lora": (str, list),
}
_TYPE_WORDS = {str: "text", int: "a whole number", float: "a number", type(None): "null"}


def parse_job(line: str) -> dict[str, Any]:
    """One job line as a dict of known fields of the right types, or BadInput saying what is wrong."""
    try:
        job = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadInput(f"not valid JSON ({e.msg})") from None
    if not isinstance(job, dict):
        raise BadInput("a job must be a JSON object")
    unknown = set(job) - set(JOB_FIELDS)
    if unknown:
        raise BadInput(f"unknown field(s) {', '.join(sorted(unknown))}")
    for key, value in job.items():
        types = JOB_FIELDS[key]
        if isinstance(value, bool) or not isinstance(value, types):
            words = " or ".join(dict.fromkeys(_TYPE_WORDS[t] for t in types))
            raise BadInput(f"the field '{key}' must be {words}, got {json.dumps(value)}")
    if not job.get("prompt"):
        raise BadInput("a job needs a prompt")
    if isinstance(job.get("lora"), list) and not all(isinstance(x, str) for x in job["lora"]):
        raise BadInput(
            f"the field 'lora' must be text or a list of texts (FILE or FILE:SCALE), got {json.dumps(job['lora'])}"
        )
    return job


def job_request(ctx: ModelContext, job: dict[str, Any]) -> Request:
    """The request of a parsed job, its face resolved for the context's model."""
    size = job.get("size")
    height, width = parse_size(str(size) if size is not None else None)
    sample_keys = ("w", "c", "a", "variety", "steps", "scheduler")
    sample = SampleConfig(**{k: job[k] for k in sample_keys if k in job}, height=height, width=width)
    if "steps" not in job:
        sample = dataclasses.replace(sample, steps=ctx.steps())
    lora = job.get("lora", [])
    inputs = Inputs.from_options(
        Path(job["init"]) if "init" in job else None,
        job.get("strength"),
        Path(job["mask"]) if "mask" in job else None,
        job.get("controlnet"),
        Path(job["control"]) if "control" in job else None,
        job.get("control_scale", 1.0),
        [lora] if isinstance(lora, str) else lora,
    )
    req = Request(
        prompt=job["prompt"],
        face=ctx.face(job.get("face")),
        seed=job.get("seed", 0),
        n=job.get("n", 1),
        sample=sample,
        negative=job.get("negative", ""),
        model=ctx.model,
        inputs=inputs,
    )
    req.check()
    return req


def run_jobs(ctx: ModelContext, jobs: Path, out: Path, force: bool = False, batch: int = 1) -> Iterator[dict[str, Any]]:
    """Run a JSONL batch; yield one record per job line, in line order: {"line", "ok": True, "images"} or
    {"line", "ok": False, "error"}. A bad line (invalid JSON, an unknown field, a field of the wrong type, a bad
    value) is its record's error, and the other jobs still run. Blank lines and lines starting with # are
    skipped.

    BATCH > 1: up to that many images per pipeline call (render_all), within a job and across consecutive jobs
    with the same sampler settings and negative prompt (prompts, faces and seeds may differ), so a file of
    one-image jobs batches too. A job still succeeds or fails alone: a bad line ends the run of jobs before it
    (they render first, so records stay in line order), a job that would write where a job of the run writes
    starts a new run (as if they ran one by one), and when a batched call fails, the jobs it left unfinished
    render again one by one so that the error is the failing job's only (jobs whose images were all written
    before it stand as they are).

    JOBS "-" reads standard input line by line as it comes, so results stream: at BATCH 1 each job's record is
    written before the next line is read; at BATCH N a run waits for N images, another setting or the end of input.

    Raises:
        BadInput: the jobs file itself cannot be read (standard input that turns out not to be UTF-8: the jobs
            already read still render first).
    """
    run: list[tuple[int, Request, list[Path]]] = []  # consecutive jobs waiting to render together
    run_key: Any = None  # what the run's jobs share (context.batch_key)
    lines = enumerate(job_lines(jobs), start=1)
    while True:
        try:
            lineno, line = next(lines)
        except StopIteration:
            break
        except BadInput:
            yield from _render_run(ctx, run, batch)
            raise
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            req = job_request(ctx, parse_job(line))
            job_out = json.loads(line).get("out")
            target = Path(job_out) if job_out else out / f"job-{lineno:04d}"
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", req.face.label)[:40] + f"-s{req.seed}"
            paths = output_paths(target, stem, req.n)
            key = batch_key(req, batch)
            if run and (key is None or key != run_key or not _paths(run).isdisjoint(paths)):
                yield from _render_run(ctx, run, batch)
                run = []
            check_free(paths, force)
        except (Face0Error, OSError) as e:
            yield from _render_run(ctx, run, batch)
            run = []
            yield _failed(lineno, e)
            continue
        if not run:
            run_key = key
        run.append((lineno, req, paths))
        if key is None or sum(r.n for _, r, _ in run) >= batch:
            yield from _render_run(ctx, run, batch)
            run = []
    yield from _render_run(ctx, run, batch)


def job_lines(jobs: Path) -> Iterator[str]:
    """The lines of a jobs file, or of standard input (UTF-8) when JOBS is "-", read as they come.

    Raises:
        BadInput: the file is missing, a folder or not UTF-8 text; standard input is not UTF-8 text.
    """
    if str(jobs) != "-":
        yield from read_text_file(jobs).splitlines()
        return
    import io

    raw = getattr(sys.stdin, "buffer", None)
    wrapper = io.TextIOWrapper(raw, encoding="utf-8") if raw is not None else None
    try:
        for line in wrapper if wrapper is not None else sys.stdin:
            yield line.rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise BadInput("standard input (--jobs -) is not UTF-8 text.") from e
    finally:
        if wrapper is not None:
            wrapper.detach()  # leave sys.stdin open


def _failed(lineno: int, e: Exception) -> dict[str, Any]:
    """The record of a job that failed: its Face0Error's sentence, or what could not be written."""
    if isinstance(e, OSError):
        return {"line": lineno, "ok": False, "error": f"cannot write the images: {e.strerror or e}"}
    return {"line": lineno, "ok": False, "error": str(e)}


def _paths(run: list[tuple[int, Request, list[Path]]]) -> set[Path]:
    return {p for _, _, paths in run for p in paths}


def _render_run(ctx: ModelContext, run: list[tuple[int, Request, list[Path]]], batch: int) -> Iterator[dict[str, Any]]:
    """Render consecutive jobs in one render_all call (batched across them); one record per job, in order."""
    if not run:
        return
    results: list[dict[str, Any]] = []  # the images saved so far, in job order
    failure: Exception | None = None
    try:
        render_all(ctx, [r for _, r, _ in run], [p for *_, p in run], show_progress=False, batch=batch, sink=results)
    except (Face0Error, OSError) as e:
        failure = e
    k = 0
    for i, (lineno, req, _) in enumerate(run):
        if failure is not None and k + req.n > len(results):  # unfinished when the call failed: it and the rest
            rest = run[i:]
            if len(rest) > 1:  # which job failed? each alone, so the others still succeed
                for job in rest:
                    yield from _render_run(ctx, [job], batch)
            else:
                yield _failed(lineno, failure)
            return
        yield {"line": lineno, "ok": True, "images": [r["path"] for r in results[k : k + req.n]]}
        k += req.n
