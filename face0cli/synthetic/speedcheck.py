"""Speed of a model against plain diffusers on the same components, measured in the same run (the scorecard's speed
rows and benchmarks/bench_cold.py).

Two pairs of figures, each face0 against a reference that does the same work with diffusers' own
StableDiffusionPipeline built from the model's UNet, VAE, text encoder, tokenizer and scheduler (no face0 code):

- in-process: one 64 px image at the model's steps, face0 with a face (c = 1: two UNet branches a step) against
  plain classifier-free guidance (two branches a step); runs interleaved after a warm-up of each, the ratio is the
  median over pairs.
- cold: the quickstart's `face0 generate` in a fresh process against a fresh process that imports diffusers,
  loads the same components and writes one PNG of the same prompt (`python -m face0cli.synthetic.speedcheck
  MODEL OUT.png`). The reference reports its own import time, which is the floor no command on these libraries
  gets under on this machine. Runs alternate (face0, plain, face0, ...), so a drift in the machine's speed reaches
  both; the ratio is the median over pairs.

A ratio near 1 says face0 adds nothing to what the libraries cost; the seconds themselves depend on the machine
and the hour (this CPU's speed drifts by up to 2x).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROMPT = "a photo of a person in a red shirt on a blue background"
"""The quickstart's prompt."""


def plain_pipeline(model_dir: str | Path, components: dict[str, Any] | None = None) -> Any:
    """diffusers' StableDiffusionPipeline over a face0 model's UNet, VAE, text encoder, tokenizer and scheduler,
    loaded by their own classes (or taken from `components`, the modules of a loaded Face0Pipeline)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    model_dir = Path(model_dir)
    if components is None:
        components = {
            "unet": UNet2DConditionModel.from_pretrained(model_dir / "unet", torch_dtype=torch.float32),
            "vae": AutoencoderKL.from_pretrained(model_dir / "vae", torch_dtype=torch.float32),
            "text_encoder": CLIPTextModel.from_pretrained(model_dir / "text_encoder", dtype=torch.float32),
            "tokenizer": CLIPTokenizer.from_pretrained(model_dir / "tokenizer"),
        }
    scheduler = DDIMScheduler.from_pretrained(model_dir / "scheduler")
    pipe: Any = StableDiffusionPipeline(
        **components, scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _reference_main(argv: list[str]) -> None:
    """The cold reference: import, load, one image, a PNG; prints its phases' seconds as JSON."""
    t0 = time.perf_counter()
    import torch
    from diffusers import StableDiffusionPipeline  # noqa: F401  (the import is what is timed)

    t1 = time.perf_counter()
    model_dir, out = Path(argv[0]), Path(argv[1])
    steps = int(argv[2]) if len(argv) > 2 else 25
    w = float(argv[3]) if len(argv) > 3 else 7.5
    size = int(argv[4]) if len(argv) > 4 else 64
    pipe = plain_pipeline(model_dir)
    t2 = time.perf_counter()
    image = pipe(
        PROMPT, height=size, width=size, num_inference_steps=steps, guidance_scale=w,
        generator=torch.Generator().manual_seed(0),
    ).images[0]  # fmt: skip
    image.save(out)
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "sample_s": t3 - t2}))


def model_steps(model_dir: str | Path) -> int:
    """The steps a model was measured at (its face0.json `steps`), else face0's default; what `face0 generate`
    samples at when no --steps is given."""
    from face0cli.config import SAMPLE_DEFAULTS

    recorded = json.loads((Path(model_dir) / "face0.json").read_text(encoding="utf-8")).get("steps")
    return int(recorded) if recorded else SAMPLE_DEFAULTS.steps


def in_process(model_dir: str | Path, steps: int | None = None, repeats: int = 5) -> dict[str, float]:
    """Seconds for one image in-process, face0 (a GMM face, c = 1) and plain diffusers on the same modules, at
    STEPS (default: the model's own)."""
    import numpy as np
    import torch

    from face0cli.config import SAMPLE_DEFAULTS
    from face0cli.model.pipeline import Face0Pipeline

    steps = steps or model_steps(model_dir)
    pipe = Face0Pipeline.load(str(model_dir))
    pipe.set_progress_bar_config(disable=True)
    face = pipe.gmm.sample(1, seed=0)[0] if pipe.gmm is not None else None
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    modules = {k: getattr(pipe, k) for k in ("unet", "vae", "text_encoder", "tokenizer")}
    plain = plain_pipeline(model_dir, modules)

    def face0_once(k: int) -> float:
        t = time.perf_counter()
        pipe(PROMPT, face, num_inference_steps=steps, generator=torch.Generator().manual_seed(k), output_type="np")
        return time.perf_counter() - t

    def plain_once(k: int) -> float:
        t = time.perf_counter()
        plain(
            PROMPT, height=size, width=size, num_inference_steps=steps, guidance_scale=SAMPLE_DEFAULTS.w,
            generator=torch.Generator().manual_seed(k), output_type="np",
        )  # fmt: skip
        return time.perf_counter() - t

    face0_once(0), plain_once(0)  # warm-up
    pairs = [(face0_once(k), plain_once(k)) for k in range(1, repeats + 1)]
    return {
        "in_process_s": float(np.median([f for f, _ in pairs])),
        "in_process_plain_s": float(np.median([p for _, p in pairs])),
        "in_process_ratio": float(statistics.median(f / p for f, p in pairs)),
    }


def cold(model_dir: str | Path, face: str, out_png: Path, steps: int | None = None, runs: int = 3) -> dict[str, Any]:
    """Wall seconds of the quickstart's `face0 generate` from a fresh process, alternating with the plain diffusers
    reference in a fresh process (same components, steps, prompt and size). STEPS None: the quickstart's command
    as it is (the model's own steps, which the reference then takes too); else both get STEPS.

    Also says whether peft is installed here (`cli_cold_peft`): diffusers imports it, and transformers' modelling
    code through it, on every import when it is, which the user's install (no `lora` or `dev` extra) does not pay."""
    import importlib.util

    import numpy as np

    face0_cmd = [
        sys.executable, "-m", "face0cli", "generate", "--model", str(model_dir), "--face", face, "--prompt", PROMPT,
        "--out", str(out_png), "--force", *(["--steps", str(steps)] if steps else []),
    ]  # fmt: skip
    steps = steps or model_steps(model_dir)
    plain_png = out_png.with_name(out_png.stem + "-plain.png")
    from face0cli.config import SAMPLE_DEFAULTS

    plain_cmd = [
        sys.executable, "-m", "face0cli.synthetic.speedcheck", str(model_dir), str(plain_png), str(steps),
        str(SAMPLE_DEFAULTS.w),
    ]  # fmt: skip
    face0_s, plain_s, imports = [], [], []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(face0_cmd, check=True, capture_output=True)
        face0_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        done = subprocess.run(plain_cmd, check=True, capture_output=True, text=True)
        plain_s.append(time.perf_counter() - t)
        imports.append(json.loads(done.stdout.strip().splitlines()[-1])["import_s"])
    out_png.unlink(missing_ok=True)
    plain_png.unlink(missing_ok=True)
    return {
        "cli_cold_s": float(np.median(face0_s)),
        "cli_cold_max_s": max(face0_s),
        "cli_cold_plain_s": float(np.median(plain_s)),
        "cli_cold_ratio": float(statistics.median(f / p for f, p in zip(face0_s, plain_s))),
        "cli_cold_plain_import_s": float(np.median(imports)),
        "cli_cold_peft": importlib.util.find_spec("peft") is not None,
    }


if __name__ == "__main__":
    _reference_main(sys.argv[1:])
