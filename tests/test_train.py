"""face0 train (paper §2.1, §2.3): the loop, the modes, checkpoints and resume, errors, and a 2-process run.

Everything runs on face0cli.model.tiny's components at 32x32 with a synthetic triplet file of 4 coloured PNGs and
random 32-d embeddings (the tiny projector's input), written with h5py as docs/triplets-format.md describes.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image
from safetensors.torch import load_file

from face0cli.config import TrainConfig
from face0cli.data.prep import TripletFile
from face0cli.errors import BadInput, EmbedderMismatch, MissingPackage, ModelError, ParameterError
from face0cli.locks import FolderBusy
from face0cli.model.pipeline import Face0Pipeline
from face0cli.model.tiny import tiny_components, tiny_pipeline
from face0cli.training import train as T

EMBEDDER = "tiny/random"
DIM = 32
N = 4
NO_SAFETY = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
CAPTIONS = ["a photo of a man", "a photo of a woman", "a painting of a person", "a portrait with blue hair"]

FAST = TrainConfig(
    max_steps=4,
    batch_size=2,
    lr=1e-3,
    lr_warmup_steps=0,
    resolution=32,
    num_workers=0,
    log_every=1,
    checkpoint_every=0,
    validate_every=0,
    validation_steps=2,
    validation_faces=2,
    ema_decay=0.9,
    projector_hidden_dim=32,
)


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and a shared 2-core machine makes more threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_triplets(
    path: Path,
    refs: list[str],
    *,
    dim: int = DIM,
    embedder_id: str = EMBEDDER,
    embeddings: np.ndarray | None = None,
    latents: np.ndarray | None = None,
) -> Path:
    """A finished triplet file (docs/triplets-format.md) over the given image refs."""
    n = len(refs)
    if embeddings is None:
        embeddings = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    text = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.attrs.update(
            {
                "format": "face0-triplets",
                "format_version": 1,
                "embedder_id": embedder_id,
                "dim": dim,
                "settings": json.dumps({"latents": None if latents is None else "test"}),
                "summary": json.dumps({"samples": n, "seen": n, "kept": n}),
                "complete": True,
                "done": n,
                "rows": n,
                "range_start": 0,
                "range_stop": n,
            }
        )
        f["index"] = np.arange(n, dtype=np.int64)
        f.create_dataset("key", data=[f"img{i}" for i in range(n)], dtype=text)
        f.create_dataset("ref", data=refs, dtype=text)
        f.create_dataset("caption", data=[CAPTIONS[i % len(CAPTIONS)] for i in range(n)], dtype=text)
        f["box"] = np.tile(np.array([[8, 8, 40, 40]], np.float32), (n, 1)).reshape(n, 4)
        f["prob"] = np.ones(n, np.float32)
        f["size"] = np.tile(np.array([[48, 40]], np.int32), (n, 1)).reshape(n, 2)
        f["embedding"] = np.asarray(embeddings, np.float32).reshape(n, dim)
        if latents is not None:
            f["latents"] = latents.astype(np.float32)
    return path


@dataclass(frozen=True)
class World:
    root: Path
    sd: Path  # a tiny SD 1.x diffusers directory
    face0: Path  # a tiny face0 model directory (embedder tiny/random, 32-d)
    triplets: Path  # 4 PNG images with captions and random 32-d embeddings
    refs: list[str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("train")
    comps = tiny_components(seed=0, embed_dim=DIM)
    comps.pop("projector")
    StableDiffusionPipeline(**comps, **NO_SAFETY).save_pretrained(root / "sd")
    tiny_pipeline(seed=1, embed_dim=DIM).save_pretrained(root / "face0")
    refs = []
    for i in range(N):  # distinct, non-square pictures: a coloured field with a lighter box
        a = np.zeros((40, 48, 3), np.uint8)
        a[..., i % 3] = 60 * (i + 1)
        a[8 + i : 30, 10 : 34 + i] = 250 - 40 * i
        p = root / f"img{i}.png"
        Image.fromarray(a).save(p)
        refs.append(str(p))
    return World(root, root / "sd", root / "face0", write_triplets(root / "triplets.h5", refs), refs)


def weights(model_dir: Path, part: str) -> dict[str, torch.Tensor]:
    return load_file(next((model_dir / part).glob("*.safetensors")))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=0) for k in a)


@torch.no_grad()
def fixed_loss(pipe: Face0Pipeline, triplets: Path) -> float:
    """The denoising loss (paper §2.3) of the 4 examples at fixed timesteps and noise, no face dropout."""
    ds = T.TripletDataset(TripletFile(triplets), pipe.tokenizer, 32)
    batch = torch.utils.data.default_collate([ds[i] for i in range(N)])
    sf = pipe.vae.config.scaling_factor
    latents = pipe.vae.encode(batch["pixel_values"]).latent_dist.mean * sf
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([100, 300, 500, 700])
    sched = T.DDPMScheduler.from_config(pipe.scheduler.config)
    context = pipe.text_encoder(batch["input_ids"], return_dict=False)[0]
    den = T.Face0Denoiser(pipe.unet, pipe.projector, pipe.face0_config.token_positions)
    pred = den(sched.add_noise(latents, noise, t), t, context, batch["embedding"])
    return float(torch.nn.functional.mse_loss(pred, noise))


# ------------------------------------------------------------------------------------------------ a full run


@pytest.fixture(scope="module")
def run(world: World, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, T.TrainResult]:
    """40 steps of the paper's mode (UNet + projector) on the 4 examples, with validation and checkpoints."""
    cfg = replace(FAST, max_steps=40, batch_size=4, checkpoint_every=20, keep_checkpoints=1, validate_every=40)
    out = tmp_path_factory.mktemp("run") / "out"
    return cfg, T.train(cfg, triplets=world.triplets, out=out, base=world.sd, show_progress=False)


@pytest.mark.slow
def test_loss_goes_down_on_a_tiny_overfit_set(world: World, run: tuple[TrainConfig, T.TrainResult]) -> None:
    cfg, result = run
    start = Face0Pipeline.from_sd(world.sd, EMBEDDER, DIM, seed=cfg.seed, hidden_dim=cfg.projector_hidden_dim)
    trained = Face0Pipeline.from_pretrained(result.model_dir)
    before, after = fixed_loss(start, world.triplets), fixed_loss(trained, world.triplets)
    assert after < 0.6 * before, (before, after)
    rows = (result.log).read_text().splitlines()
    assert rows[0] == "step,loss,lr,samples_per_s,seconds" and len(rows) == 41
    losses = [float(r.split(",")[1]) for r in rows[1:]]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert all(float(r.split(",")[2]) == pytest.approx(1e-3) and float(r.split(",")[3]) > 0 for r in rows[1:])
    assert result.steps == 40 and result.loss == pytest.approx(losses[-1], rel=1e-4)


@pytest.mark.slow
def test_the_model_directory(world: World, run: tuple[TrainConfig, T.TrainResult]) -> None:
    cfg, result = run
    model = result.model_dir
    pipe = Face0Pipeline.from_pretrained(model)
    assert pipe.gmm is not None and (model / "gmm").is_dir()
    assert (pipe.gmm.dim, pipe.gmm.embedder_id) == (DIM, EMBEDDER)
    assert (pipe.face0_config.embedder_id, pipe.face0_config.embed_dim) == (EMBEDDER, DIM)
    saved = json.loads((model / "train_config.json").read_text())
    assert TrainConfig(**{**saved, "validation_prompts": tuple(saved["validation_prompts"])}) == cfg
    assert json.loads((model / "training.json").read_text())["steps"] == 40
    # frozen parts are the base's, bit for bit; the UNet was trained
    for part in ("vae", "text_encoder"):
        assert same(weights(model, part), weights(world.sd, part))
    assert not same(weights(model, "unet"), weights(world.sd, "unet"))
    image = pipe("a photo of a person", np.zeros(DIM, np.float32), num_inference_steps=2).images[0]
    assert image.size == (32, 32)


@pytest.mark.slow
def test_checkpoints_validation_and_log_files(run: tuple[TrainConfig, T.TrainResult]) -> None:
    _, result = run
    out = result.model_dir.parent
    assert [p.name for p in result.checkpoints] == ["step-000040"]  # keep_checkpoints=1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000040"]  # no temporary left
    ckpt = result.checkpoints[0]
    assert {"model.safetensors", "optimizer.bin", "scheduler.bin", "custom_checkpoint_0.pkl"} <= {
        p.name for p in ckpt.iterdir()
    }
    assert json.loads((ckpt / T.STATE_JSON).read_text())["step"] == 40
    assert [p.name for p in result.validation] == ["step-000040.png"]
    with Image.open(result.validation[0]) as grid:
        assert grid.format == "PNG" and grid.width > 3 * 32  # 2 faces + no face, labelled
    # no temporary left; the run's lock file stays (an OS lock, free now: the next run takes it)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [T.LOCK]


@pytest.mark.slow
def test_the_export_writes_a_model_card(run: tuple[TrainConfig, T.TrainResult]) -> None:
    """training's export writes README.md (the model card) with the last validation grid copied in."""
    _, result = run
    card = (result.model_dir / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---") and "library_name: diffusers" in card
    assert "40" in card and EMBEDDER in card
    assert "![validation grid](validation.png)" in card
    assert (result.model_dir / "validation.png").read_bytes() == result.validation[-1].read_bytes()


@pytest.mark.slow
def test_the_model_gets_the_ema_weights(run: tuple[TrainConfig, T.TrainResult]) -> None:
    """EMA mechanics (decay 0.9 here; 0.9999 would not move in 40 steps): the model holds the shadow weights."""
    _, result = run
    ema = torch.load(result.checkpoints[-1] / "custom_checkpoint_0.pkl", weights_only=False)
    assert (ema["decay"], ema["optimization_step"]) == (0.9, 40)
    pipe = Face0Pipeline.from_pretrained(result.model_dir)
    trained = list(T.Face0Denoiser(pipe.unet, pipe.projector, (74, 75, 76)).parameters())
    assert len(trained) == len(ema["shadow_params"])
    assert all(torch.equal(p, s) for p, s in zip(trained, ema["shadow_params"]))
    raw = load_file(result.checkpoints[-1] / "model.safetensors")
    assert not torch.equal(raw["projector.mlp.0.weight"], pipe.projector.mlp[0].weight)  # EMA != last step


# ------------------------------------------------------------------------------------------------ modes


@pytest.mark.parametrize("mode", ["unet", "lora", "projector"])
def test_each_mode_updates_only_what_it_trains(world: World, mode: str) -> None:
    from accelerate import Accelerator

    cfg = replace(FAST, train=mode, lr=1e-2, use_ema=False, lora_rank=4, lora_alpha=4)
    pipe = Face0Pipeline.from_sd(world.sd, EMBEDDER, DIM, seed=0, hidden_dim=32)
    before = {
        name: {k: v.clone() for k, v in getattr(pipe, name).state_dict().items()}
        for name in ("vae", "text_encoder", "unet", "projector")
    }
    trainer = T.Trainer(pipe, cfg, Accelerator(cpu=True))
    ds = T.TripletDataset(TripletFile(world.triplets), pipe.tokenizer, 32)
    batch = torch.utils.data.default_collate([ds[i] for i in range(N)])
    for _ in range(2):
        trainer.step(batch)
    for name in ("vae", "text_encoder"):
        assert same(getattr(pipe, name).state_dict(), before[name]), name
        assert not any(p.requires_grad for p in getattr(pipe, name).parameters())
    assert not same(pipe.projector.state_dict(), before["projector"])
    unet_now = pipe.unet.state_dict()
    base_now = {k.replace(".base_layer", ""): v for k, v in unet_now.items() if "lora_" not in k}
    lora = {k: v for k, v in unet_now.items() if "lora_B" in k}
    if mode == "unet":
        assert not same(base_now, before["unet"]) and not lora
    elif mode == "lora":
        assert same(base_now, before["unet"])  # the base UNet is untouched; only the adapters learn
        assert lora and any(v.abs().sum() > 0 for v in lora.values())  # lora_B starts at zero
    else:
        assert same(base_now, before["unet"]) and not lora


def test_lora_run_merges_the_adapters_into_the_saved_unet(world: World, tmp_path: Path) -> None:
    cfg = replace(FAST, train="lora", max_steps=3, lr=1e-2, lora_rank=4, lora_alpha=4, checkpoint_every=3)
    result = T.train(cfg, triplets=world.triplets, out=tmp_path / "out", base=world.sd, show_progress=False)
    pipe = Face0Pipeline.from_pretrained(result.model_dir)  # a plain UNet: no peft layers in the directory
    assert not any("lora" in k for k in pipe.unet.state_dict())
    saved, base = weights(result.model_dir, "unet"), weights(world.sd, "unet")
    attn = [k for k in base if any(f".{t}." in k for t in T.LORA_TARGETS) and k.endswith("weight")]
    assert attn and all(not torch.equal(saved[k], base[k]) for k in attn)
    assert all(torch.equal(saved[k], base[k]) for k in base if k not in attn)
    ckpt = load_file(result.checkpoints[-1] / "model.safetensors")  # the trained module keeps the base as it was
    assert all(torch.equal(ckpt[f"unet.{k}".replace(".weight", ".base_layer.weight")], base[k]) for k in attn)


def test_lora_run_without_peft_stops_before_anything_is_written(world: World, tmp_path: Path, no_peft: None) -> None:
    with pytest.raises(MissingPackage, match=r"--train lora needs peft.*face0\[lora\]"):
        T.train(replace(FAST, train="lora"), triplets=world.triplets, out=tmp_path / "out", base=world.sd)
    assert not (tmp_path / "out").exists()


def test_projector_only_run_keeps_the_unet(world: World, tmp_path: Path) -> None:
    cfg = replace(FAST, train="projector", max_steps=2, lr=1e-2, checkpoint_every=2)
    result = T.train(cfg, triplets=world.triplets, out=tmp_path / "out", base=world.face0, show_progress=False)
    ckpt = load_file(result.checkpoints[-1] / "model.safetensors")
    base = weights(world.face0, "unet")
    assert all(torch.equal(ckpt[f"unet.{k}"], v) for k, v in base.items())
    assert same(weights(result.model_dir, "unet"), base)
    assert not same(weights(result.model_dir, "projector"), weights(world.face0, "projector"))


# ------------------------------------------------------------------------------------------------ resume


class Interrupted(Exception):
    pass


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = replace(
        FAST,
        max_steps=6,
        gradient_accumulation_steps=2,
        random_flip=True,
        checkpoint_every=3,
        validate_every=3,
        num_workers=1,
    )
    straight = T.train(cfg, triplets=world.triplets, out=tmp_path / "a", base=world.sd, show_progress=False)

    def stop(step: int, loss: float) -> None:
        if step == 5:
            raise Interrupted

    monkeypatch.setattr(T, "_after_step", stop)
    with pytest.raises(Interrupted):
        T.train(cfg, triplets=world.triplets, out=tmp_path / "b", base=world.sd, show_progress=False)
    monkeypatch.setattr(T, "_after_step", None)
    assert [p.name for p in T.list_checkpoints(tmp_path / "b")] == ["step-000003"]
    with pytest.raises(BadInput, match="resume"):  # a fresh start over an unfinished run is refused
        T.train(cfg, triplets=world.triplets, out=tmp_path / "b", base=world.sd, show_progress=False)
    resumed = T.train(
        cfg, triplets=world.triplets, out=tmp_path / "b", base=world.sd, resume="latest", show_progress=False
    )
    assert resumed.resumed_from == tmp_path / "b" / "checkpoints" / "step-000003" and resumed.steps == 6
    for part in ("unet", "projector"):  # the EMA weights
        assert same(weights(straight.model_dir, part), weights(resumed.model_dir, part), atol=1e-6), part
    a, b = (load_file(r.checkpoints[-1] / "model.safetensors") for r in (straight, resumed))
    assert same(a, b, atol=1e-6)  # the raw weights
    ema_a, ema_b = (
        torch.load(r.checkpoints[-1] / "custom_checkpoint_0.pkl", weights_only=False) for r in (straight, resumed)
    )
    assert ema_a["optimization_step"] == ema_b["optimization_step"] == 6
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(ema_a["shadow_params"], ema_b["shadow_params"]))
    logged = [[r.split(",")[:3] for r in x.log.read_text().splitlines()] for x in (straight, resumed)]
    assert logged[0] == logged[1] and len(logged[0]) == 7  # step, loss, lr of steps 1..6, the resumed run's trimmed


def test_a_second_run_into_a_folder_in_training_stops_at_once_and_touches_nothing(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = replace(FAST, max_steps=3, checkpoint_every=1)
    out = tmp_path / "out"
    seen: list[tuple[Exception, list[str]]] = []

    def second_run(step: int, loss: float) -> None:
        if step == 2:  # the first run holds out/ and has written its first checkpoint
            before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
            with pytest.raises(FolderBusy, match="being trained into by another face0 train") as e:
                T.train(cfg, triplets=world.triplets, out=out, base=world.sd, resume="latest", show_progress=False)
            seen.append((e.value, before))
            assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before  # nothing written or pruned

    monkeypatch.setattr(T, "_after_step", second_run)
    first = T.train(cfg, triplets=world.triplets, out=out, base=world.sd, show_progress=False)
    assert len(seen) == 1 and "checkpoints/step-000001" in seen[0][1]
    assert first.steps == 3 and [p.name for p in first.checkpoints][-1] == "step-000003"
    monkeypatch.setattr(T, "_after_step", None)
    again = T.train(  # the folder is free once the first run ends
        replace(cfg, max_steps=4), triplets=world.triplets, out=out, base=world.sd, resume="latest", show_progress=False
    )
    assert again.resumed_from == out / "checkpoints" / "step-000003" and again.steps == 4


def test_batch_stream_is_disjoint_across_ranks_and_resumable() -> None:
    streams = [T.BatchStream(10, 2, r, 2, seed=3) for r in range(2)]
    epoch = [i for k in range(3) for s in streams for i, _ in s.batch(k)][:10]  # 2 ranks x 2 per micro-batch
    assert sorted(epoch) == list(range(10))
    later = T.BatchStream(10, 2, 1, 2, seed=3, start=7)
    assert next(iter(later)) == streams[1].batch(7)
    assert T.BatchStream(10, 2, 0, 1, seed=4).batch(0) != T.BatchStream(10, 2, 0, 1, seed=3).batch(0)


# ------------------------------------------------------------------------------------------------ inputs


def test_stored_latents_skip_the_vae_encoder(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import AutoencoderKL

    latents = np.random.default_rng(1).standard_normal((N, 4, 8, 8)).astype(np.float32)
    gone = [str(tmp_path / f"missing{i}.png") for i in range(N)]  # images that are not there: never loaded
    trip = write_triplets(tmp_path / "lat.h5", gone, latents=latents)

    def no_encoder(*a: object, **k: object) -> None:
        raise AssertionError("the VAE encoder ran")

    monkeypatch.setattr(AutoencoderKL, "encode", no_encoder)
    result = T.train(FAST, triplets=trip, out=tmp_path / "out", base=world.face0, show_progress=False)
    assert result.steps == FAST.max_steps  # from a face0 model directory, on stored latents
    small = write_triplets(tmp_path / "lat16.h5", gone, latents=latents[:, :, :4, :4])
    with pytest.raises(ParameterError, match="16x16"):
        T.train(FAST, triplets=small, out=tmp_path / "o2", base=world.face0)


def test_image_to_tensor_resizes_crops_and_normalises() -> None:
    im = Image.new("RGB", (60, 30), (255, 0, 0))
    x = T.image_to_tensor(im, 16)
    assert x.shape == (3, 16, 16) and x[0].min() == 1.0 and x[1].max() == -1.0


def test_embedder_mismatch(world: World, tmp_path: Path) -> None:
    other_dim = write_triplets(tmp_path / "d16.h5", world.refs, dim=16)
    with pytest.raises(EmbedderMismatch, match="16-d"):
        T.train(FAST, triplets=other_dim, out=tmp_path / "o1", base=world.face0)
    other_id = write_triplets(tmp_path / "other.h5", world.refs, embedder_id="facenet/vggface2")
    with pytest.raises(EmbedderMismatch, match="facenet/vggface2"):
        T.train(FAST, triplets=other_id, out=tmp_path / "o2", base=world.face0)


def test_input_errors(world: World, tmp_path: Path) -> None:
    empty = write_triplets(tmp_path / "empty.h5", [])
    with pytest.raises(BadInput, match="empty"):
        T.train(FAST, triplets=empty, out=tmp_path / "o", base=world.sd)
    with pytest.raises(BadInput, match="does not exist"):
        T.train(FAST, triplets=world.triplets, out=tmp_path / "o", base=world.sd, resume=str(tmp_path / "nope"))
    with pytest.raises(BadInput, match="does not exist"):
        T.train(FAST, triplets=tmp_path / "nope.h5", out=tmp_path / "o", base=world.sd)
    (tmp_path / "not-sd").mkdir()
    with pytest.raises(ModelError):
        T.train(FAST, triplets=world.triplets, out=tmp_path / "o", base=tmp_path / "not-sd")
    with pytest.raises(ParameterError, match="train must be one of"):
        TrainConfig(train="everything")
    with pytest.raises(ParameterError, match="face_drop"):
        TrainConfig(face_drop=1.5)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(world: World, tmp_path: Path) -> None:
    stream = T.BatchStream(N, 1, 0, 1, seed=FAST.seed)
    bad_row = stream.item(2)[0]  # the third example of the stream: the loss of step 3 is NaN
    emb = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    emb[bad_row, 5] = np.nan
    trip = write_triplets(tmp_path / "nan.h5", world.refs, embeddings=emb)
    cfg = replace(FAST, batch_size=1, max_steps=6, checkpoint_every=1, keep_checkpoints=5)
    with pytest.raises(T.NonFiniteLoss, match=r"step 3\b.*step-000002"):
        T.train(cfg, triplets=trip, out=tmp_path / "out", base=world.sd, show_progress=False)
    assert [p.name for p in T.list_checkpoints(tmp_path / "out")] == ["step-000001", "step-000002"]
    assert not (tmp_path / "out" / "model").exists()


# ------------------------------------------------------------------------------------------------ processes


@pytest.mark.slow
def test_two_processes_write_one_model(world: World, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
        str(Path(__file__).with_name("_train_launch.py")),
        str(world.sd), str(world.triplets), str(tmp_path / "out"), "4",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the ranks print to one pipe, and two RESULT records can land on one line: read each record after its tag
    lines = [json.JSONDecoder().raw_decode(chunk)[0] for chunk in proc.stdout.split("RESULT ")[1:]]
    assert sorted(r["rank"] for r in lines) == [0, 1] and {r["world"] for r in lines} == {2}
    assert len({r["result"]["model_dir"] for r in lines}) == 1
    assert lines[0]["result"]["steps"] == 4
    out = tmp_path / "out"
    pipe = Face0Pipeline.from_pretrained(out / "model")
    assert pipe.gmm is not None
    ckpt = out / "checkpoints" / "step-000004"
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in ckpt.iterdir()}
    assert len((out / "logs" / "train.csv").read_text().splitlines()) == 5  # written once, by the main process
    assert [p.name for p in (out / "validation").iterdir()] == ["step-000004.png"]
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp")]


# ------------------------------------------------------------------------------------------------ the CLI


@pytest.mark.slow
def test_train_command_then_generate_with_the_result(world: World, tmp_path: Path) -> None:
    """face0 train writes a model directory that face0 generate and character new can use at once."""
    from typer.testing import CliRunner

    from face0cli.cli.app import app

    runner = CliRunner()
    out = tmp_path / "out"
    args = [
        "train",
        "-t",
        world.triplets,
        "--base",
        world.sd,
        "--out",
        out,
        "--max-steps",
        3,
        "--batch-size",
        2,
        "--resolution",
        32,
        "--workers",
        0,
        "--warmup",
        0,
        "--checkpoint-every",
        0,
        "--validate-every",
        0,
        "--json",
    ]
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["steps"] == 3 and Path(res["model_dir"]).is_dir()
    model = res["model_dir"]
    r = runner.invoke(app, ["character", "new", "hero", "--seed", "1", "--model", model])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        [
            "generate",
            "--model",
            model,
            "--face",
            "hero",
            "--prompt",
            "a photo of a person",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "hero.png"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "hero.png").size == (32, 32)
    r = runner.invoke(
        app,
        [
            "train",
            "-t",
            str(world.triplets),
            "--base",
            str(world.sd),
            "--out",
            str(out),
            "--max-steps",
            "3",
            "--lr",
            "nan",
        ],
    )
    assert r.exit_code != 0 and r.stderr.startswith("error:") and "lr" in r.stderr


# ------------------------------------------------------------------------------------------------ base-model stage


def test_base_stage_trains_the_text_encoder_and_exports_it(world: World, tmp_path: Path) -> None:
    """--train-text-encoder (a base model's stage): the text encoder learns with the UNet and is saved trained,
    the VAE stays frozen; text dropout and min-SNR weighting run."""
    cfg = replace(
        FAST, max_steps=3, train_text_encoder=True, face_drop=1.0, text_drop=0.5, snr_gamma=5.0, use_ema=False
    )
    res = T.train(cfg, triplets=world.triplets, out=tmp_path / "out", base=world.sd, show_progress=False)
    before = StableDiffusionPipeline.from_pretrained(world.sd, **NO_SAFETY)
    assert not same(weights(res.model_dir, "text_encoder"), before.text_encoder.state_dict())
    assert same(weights(res.model_dir, "vae"), before.vae.state_dict())
    assert res.loss is not None and np.isfinite(res.loss)


def test_frozen_text_encoder_is_the_default(world: World) -> None:
    from accelerate import Accelerator

    pipe = Face0Pipeline.from_sd(world.sd, EMBEDDER, DIM, seed=0, hidden_dim=32)
    trainer = T.Trainer(pipe, replace(FAST, use_ema=False), Accelerator(cpu=True))
    assert not any(p.requires_grad for p in pipe.text_encoder.parameters())
    assert not any(n.startswith("text_encoder.") for n in trainer.trained_names)


def test_text_drop_replaces_captions_by_the_empty_prompt(world: World) -> None:
    from accelerate import Accelerator

    pipe = Face0Pipeline.from_sd(world.sd, EMBEDDER, DIM, seed=0, hidden_dim=32)
    ds = T.TripletDataset(TripletFile(world.triplets), pipe.tokenizer, 32)
    batch = torch.utils.data.default_collate([ds[i] for i in range(N)])
    every = T.Trainer(pipe, replace(FAST, use_ema=False, text_drop=1.0), Accelerator(cpu=True))
    _, ctx = every.encode(batch)
    empty = pipe.text_encoder(every.empty_ids)[0]
    assert torch.allclose(ctx, empty.expand_as(ctx), atol=1e-6)
    none = T.Trainer(pipe, replace(FAST, use_ema=False), Accelerator(cpu=True))
    _, ctx0 = none.encode(batch)
    assert not torch.allclose(ctx0, empty.expand_as(ctx0), atol=1e-3)


def test_projector_lr_and_options_are_checked() -> None:
    with pytest.raises(ParameterError, match="text_drop"):
        TrainConfig(text_drop=1.5)
    with pytest.raises(ParameterError, match="train_text_encoder"):
        TrainConfig(train="lora", train_text_encoder=True)
    with pytest.raises(ParameterError, match="projector_lr"):
        TrainConfig(projector_lr=-1.0)


# ------------------------------------------------------------------------------------------------ same-identity faces


def test_identity_groups_pair_each_row_with_the_other_images_of_its_identity() -> None:
    keys = ["id0001-000", "id0001-001", "id0001-002", "id0002-000", "lonely"]
    groups = T.identity_groups(keys, r"^(id\d+)-")
    assert [g.tolist() for g in groups] == [[1, 2], [0, 2], [0, 1], [3], [4]]  # alone: itself
    whole = T.identity_groups(["a1", "a2", "b1"], r"^[ab]")  # no group: the whole match
    assert [g.tolist() for g in whole] == [[1], [0], [2]]
    with pytest.raises(BadInput, match="matches none"):
        T.identity_groups(keys, r"^zz")
    with pytest.raises(BadInput, match="no identity with two images"):
        T.identity_groups(["x1", "y1"], r"^(\w)")


def test_excluded_images_train_but_never_condition_another() -> None:
    keys = ["id1-0", "id1-1", "id1-2", "id2-0", "id2-1"]
    excluded = [False, True, False, True, False]  # e.g. the dyed-hair photos
    groups = T.identity_groups(keys, r"^(id\d+)-", excluded)
    assert [g.tolist() for g in groups] == [[2], [0, 2], [0], [4], [4]]  # id2-1: no other eligible one, itself
    assert all(j not in (1, 3) for i, g in enumerate(groups) if i not in (1, 3) for j in g)
    with pytest.raises(BadInput, match="matches every caption"):
        T.identity_groups(keys, r"^(id\d+)-", [True] * 5)


MIX = r"^mix-(?P<a>id\d+)-(?P<b>id\d+)-t(?P<t>\d+)-"


def test_mix_groups_find_the_parents_of_each_morph() -> None:
    keys = ["id1-0", "id1-1", "id2-0", "mix-id1-id2-t30-0", "mix-id2-id1-t75-0", "id2-1"]
    mixes = T.mix_groups(keys, r"^(id\d+)-", MIX)
    assert sorted(mixes) == [3, 4]  # only the morphs; their rows never serve as a parent
    a, b, t = mixes[3]
    assert a.tolist() == [0, 1] and b.tolist() == [2, 5] and t == pytest.approx(0.30)
    a, b, t = mixes[4]
    assert a.tolist() == [2, 5] and b.tolist() == [0, 1] and t == pytest.approx(0.75)
    excluded = [False, True, False, False, False, False]  # a dyed-hair photo of id1 is no parent either
    assert T.mix_groups(keys, r"^(id\d+)-", MIX, excluded)[3][0].tolist() == [0]
    with pytest.raises(BadInput, match="matches none"):
        T.mix_groups(keys[:3], r"^(id\d+)-", MIX)
    with pytest.raises(BadInput, match="'id9', which has no image"):
        T.mix_groups(keys + ["mix-id1-id9-t50-0"], r"^(id\d+)-", MIX)
    with pytest.raises(BadInput, match="not a number"):
        T.mix_groups(keys + ["mix-id1-id2-tx-0"], r"^(id\d+)-", r"^mix-(?P<a>id\d+)-(?P<b>id\d+)-t(?P<t>\w+)-")


def test_dataset_conditions_a_morph_on_its_parents_mixed(world: World, tmp_path: Path) -> None:
    emb = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    trip = TripletFile(write_triplets(tmp_path / "t.h5", world.refs, embeddings=emb))
    pipe = Face0Pipeline.from_sd(world.sd, EMBEDDER, DIM, seed=0, hidden_dim=32)
    partners = [np.array([1]), np.array([0]), np.array([2]), np.array([3])]
    mixes = {3: (np.array([0, 1]), np.array([2]), 0.25)}  # row 3 is a morph between rows {0, 1} and {2}
    ds = T.TripletDataset(trip, pipe.tokenizer, 32, partners, mixes)
    want = 0.75 * emb[0].astype(np.float64) + 0.25 * emb[2]
    np.testing.assert_allclose(ds[(3, False, 0.2)]["embedding"].numpy(), want, rtol=1e-6, atol=1e-6)
    want = 0.75 * emb[1].astype(np.float64) + 0.25 * emb[2]
    np.testing.assert_allclose(ds[(3, False, 0.7)]["embedding"].numpy(), want, rtol=1e-6, atol=1e-6)
    assert torch.equal(ds[(0, False, 0.5)]["embedding"], torch.from_numpy(emb[1]))  # other rows: their partner
    two = T.TripletDataset(trip, pipe.tokenizer, 32, partners, {3: (np.array([0, 1]), np.array([1, 2]), 0.5)})
    drawn = {tuple(np.round(two[(3, False, u)]["embedding"].numpy()[:2], 5)) for u in (0.1, 0.3, 0.6, 0.8)}
    assert len(drawn) == 4  # u picks a's image and, from what is left of it, b's: all four pairs occur


def test_batch_stream_partner_draws_are_seeded_and_leave_the_rows_unchanged() -> None:
    plain = T.BatchStream(10, 3, 0, 1, seed=5, flip=True)
    paired = T.BatchStream(10, 3, 0, 1, seed=5, flip=True, partner=True)
    for k in range(5):
        assert [x[:2] for x in paired.batch(k)] == plain.batch(k)  # same rows and flips as without partners
        us = [x[2] for x in paired.batch(k)]
        assert all(0.0 <= u < 1.0 for u in us)
        assert paired.batch(k) == T.BatchStream(10, 3, 0, 1, seed=5, flip=True, partner=True, start=k).batch(k)
    assert len({x[2] for k in range(4) for x in paired.batch(k)}) == 12  # fresh draws, not one constant


def test_dataset_takes_the_embedding_of_the_partner_row(world: World, tmp_path: Path) -> None:
    emb = np.arange(N * DIM, dtype=np.float32).reshape(N, DIM)
    trip = TripletFile(write_triplets(tmp_path / "t.h5", world.refs, embeddings=emb))
    pipe = Face0Pipeline.from_sd(world.sd, EMBEDDER, DIM, seed=0, hidden_dim=32)
    partners = [np.array([1, 2]), np.array([0]), np.array([3]), np.array([3])]
    ds = T.TripletDataset(trip, pipe.tokenizer, 32, partners)
    assert torch.equal(ds[(0, False, 0.2)]["embedding"], torch.from_numpy(emb[1]))
    assert torch.equal(ds[(0, False, 0.7)]["embedding"], torch.from_numpy(emb[2]))
    assert torch.equal(ds[(1, False, 0.99)]["embedding"], torch.from_numpy(emb[0]))
    own = T.TripletDataset(trip, pipe.tokenizer, 32)  # without partners: the row's own embedding, as before
    assert torch.equal(own[(0, False)]["embedding"], torch.from_numpy(emb[0]))
    assert torch.equal(ds[(0, False, 0.2)]["pixel_values"], own[(0, False)]["pixel_values"])  # the image is row 0's


def test_a_run_with_identity_pairs_and_a_full_gmm(world: World, tmp_path: Path) -> None:
    trip = write_triplets(tmp_path / "pairs.h5", world.refs)
    with h5py.File(trip, "a") as f:  # two identities of two images each
        del f["key"]
        f.create_dataset("key", data=["p0-a", "p0-b", "p1-a", "p1-b"], dtype=h5py.string_dtype("utf-8"))
    cfg = replace(FAST, identity_pattern=r"^(p\d)-", gmm_covariance="full", gmm_max_components=1)
    result = T.train(cfg, triplets=trip, out=tmp_path / "out", base=world.sd, show_progress=False)
    meta = json.loads((result.model_dir / "gmm" / "gmm.json").read_text())
    assert meta["covariance_type"] == "full" and meta["n_components"] == 1
    assert json.loads((result.model_dir / "train_config.json").read_text())["identity_pattern"] == r"^(p\d)-"
    with pytest.raises(BadInput, match="matches none"):
        T.train(replace(cfg, identity_pattern="^zz"), triplets=trip, out=tmp_path / "o2", base=world.sd)
    captions = TripletFile(trip).captions()
    with pytest.raises(BadInput, match="matches every caption"):  # the caption filter reaches the pairing
        T.train(replace(cfg, reference_exclude="|".join(map(re.escape, captions))), triplets=trip,
                out=tmp_path / "o3", base=world.sd)  # fmt: skip
    with pytest.raises(BadInput, match="--mix-pattern .* matches none"):  # and the morph pattern reaches it too
        T.train(replace(cfg, mix_pattern=r"^mix-(?P<a>p\d)-(?P<b>p\d)-t(?P<t>\d+)-"), triplets=trip,
                out=tmp_path / "o4", base=world.sd)  # fmt: skip


def test_identity_and_gmm_options_are_checked() -> None:
    with pytest.raises(ParameterError, match="gmm_covariance"):
        TrainConfig(gmm_covariance="round")
    with pytest.raises(ParameterError, match="regular expression"):
        TrainConfig(identity_pattern="(unclosed")
    with pytest.raises(ParameterError, match="regular expression"):
        TrainConfig(identity_pattern="x", reference_exclude="[")
    with pytest.raises(ParameterError, match="needs identity_pattern"):
        TrainConfig(reference_exclude="hat")
    with pytest.raises(ParameterError, match="needs identity_pattern"):
        TrainConfig(mix_pattern=MIX)
    with pytest.raises(ParameterError, match="named groups a, b and t"):
        TrainConfig(identity_pattern="x", mix_pattern=r"^mix-(?P<a>\w+)-")
    with pytest.raises(ParameterError, match="gmm_max_components"):
        TrainConfig(gmm_max_components=0)
