"""Benchmark `face0 prep` (paper §2.3): images/s of the multi-process path against a naive facenet loop.

    python benchmarks/bench_prep.py [--images 64] [--processes 2] [--batch-size 32] [--repeat 2]

On the same images (photos that ship with scikit-image and matplotlib: faces, mirrored and rescaled faces,
images without a face), in the same run:

1. naive: one process, torch's default threads, one image at a time: ``MTCNN(image)`` (detect + crop) then
   ``InceptionResnetV1(crop[None])``, as facenet-pytorch's README does it;
2. prep, 1 process: `prep.prep` (batched embedding, chunked HDF5 writes);
3. prep, N processes: ``accelerate launch --multi_gpu --num_processes N`` of this file in worker mode; each
   rank preps its shard with one torch thread, rank 0 merges the parts.

Each round runs the three in turn; the best of --repeat rounds is printed (the machine may be shared).
Times exclude interpreter start and model construction (each side warms up on one image first); the
N-process time runs from a barrier after warm-up to the end of the merge. The launch's wall time is printed
too. Random-init weights (seed 0): the speed of InceptionResnetV1 does not depend on its weights.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve()


def make_images(folder: Path, n: int) -> list[Path]:
    """n captioned images cycling through faces, mirrored / rescaled faces and images without a face."""
    import matplotlib.cbook
    import skimage.data

    hopper = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    bases = {
        "astronaut": skimage.data.astronaut(),
        "hopper": hopper,
        "camera": np.stack([skimage.data.camera()] * 3, axis=-1),
        "coffee": skimage.data.coffee(),
        "chelsea": skimage.data.chelsea(),
    }
    variants = []
    for name, arr in bases.items():
        img = Image.fromarray(arr)
        variants += [(f"{name}", img), (f"{name}-flip", img.transpose(Image.FLIP_LEFT_RIGHT))]
        variants.append((f"{name}-small", img.resize((img.width * 3 // 4, img.height * 3 // 4))))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        name, img = variants[i % len(variants)]
        p = folder / f"{i:05d}-{name}.jpg"
        img.save(p, quality=92)
        p.with_suffix(".txt").write_text(f"a photo: {name}")
        paths.append(p)
    return paths


def naive(paths: list[Path]) -> float:
    """Seconds for the one-image-at-a-time facenet-pytorch loop over paths (after one warm-up image)."""
    import torch
    from facenet_pytorch import MTCNN, InceptionResnetV1

    torch.manual_seed(0)
    mtcnn = MTCNN(image_size=160, margin=0, device="cpu")
    resnet = InceptionResnetV1(pretrained=None).eval()

    def one(path: Path) -> None:
        face = mtcnn(Image.open(path).convert("RGB"))
        if face is not None:
            with torch.no_grad():
                resnet(face.unsqueeze(0))

    one(paths[0])
    t = time.perf_counter()
    for p in paths:
        one(p)
    return time.perf_counter() - t


def prep_once(folder: Path, out: Path, batch_size: int, chunk_size: int) -> tuple[float, dict]:
    """Seconds and summary of a single-process prep (after one warm-up detection)."""
    from face0cli.config import PrepConfig
    from face0cli.data.prep import prep
    from face0cli.data.readers import open_dataset
    from face0cli.faces.embedders import FacenetEmbedder

    ds = open_dataset(folder)
    embedder = FacenetEmbedder(seed=0)
    _warm_up(embedder, ds)
    cfg = PrepConfig(chunk_size=chunk_size)
    t = time.perf_counter()
    summary = prep(ds, out, embedder, cfg, batch_size=batch_size, show_progress=False)
    return time.perf_counter() - t, summary.to_dict()


def _warm_up(embedder, ds) -> None:  # noqa: ANN001
    image = ds[0].load()
    faces = embedder.detect(image)
    if faces:
        embedder.embed([embedder.crop(image, faces[0].box)])


def worker(folder: Path, out: Path, batch_size: int, chunk_size: int) -> None:
    """One rank of the N-process run: warm up, barrier, prep (own shard + merge on rank 0), report."""
    from accelerate import PartialState

    from face0cli.config import PrepConfig
    from face0cli.data.prep import prep
    from face0cli.data.readers import open_dataset
    from face0cli.faces.embedders import FacenetEmbedder

    state = PartialState(cpu=True)
    ds = open_dataset(folder)
    embedder = FacenetEmbedder(seed=0)
    _warm_up(embedder, ds)
    state.wait_for_everyone()
    cfg = PrepConfig(chunk_size=chunk_size)
    t = time.perf_counter()
    summary = prep(ds, out, embedder, cfg, batch_size=batch_size, show_progress=False)
    seconds = time.perf_counter() - t
    import torch

    if state.is_main_process:
        report = {"seconds": seconds, "threads": torch.get_num_threads(), "summary": summary.to_dict()}
        print(json.dumps(report))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multi(folder: Path, out: Path, processes: int, *sizes: Any) -> tuple[float, float, dict]:
    """(prep seconds, launch wall seconds, report) of the N-process accelerate run."""
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1"]
    cmd += ["--main_process_port", str(_free_port()), "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += [str(HERE), "--worker", str(folder), str(out)]
    batch, chunk = sizes
    cmd += ["--batch-size", str(batch), "--chunk-size", str(chunk)]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent.parent)}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"accelerate launch failed:\n{proc.stderr[-12000:]}")
    report = json.loads([x for x in proc.stdout.splitlines() if x.startswith('{"seconds"')][-1])
    return report["seconds"], wall, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--chunk-size", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2, help="rounds; each variant's best time is kept")
    ap.add_argument("--worker", nargs=2, metavar=("FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        folder, out = (Path(p) for p in args.worker)
        worker(folder, out, args.batch_size, args.chunk_size)
        return

    import torch

    # the machine is shared: run the three in turn, --repeat times, and keep each one's best time
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="face0-bench-") as tmp:
        folder = Path(tmp) / "images"
        paths = make_images(folder, args.images)
        n = len(paths)
        for r in range(args.repeat):
            t_naive = naive(paths)
            one, out = Path(tmp) / f"one-{r}.h5", Path(tmp) / f"multi-{r}.h5"
            sizes = (args.batch_size, args.chunk_size)
            t_one, s_one = prep_once(folder, one, *sizes)
            t_multi, wall, report = multi(folder, out, args.processes, *sizes)
            for k, v in (("naive", t_naive), ("one", t_one), ("multi", t_multi), ("wall", wall)):
                best[k] = min(best.get(k, v), v)
            assert report["summary"]["kept"] == s_one["kept"], "the N-process run kept other faces"
    t_naive, t_one, t_multi, wall = best["naive"], best["one"], best["multi"], best["wall"]

    print(f"{n} images ({s_one['kept']} with a face), {os.cpu_count()} CPU cores, torch {torch.__version__}")
    print(f"{'naive facenet-pytorch loop, 1 process':<48} {n / t_naive:7.2f} images/s  ({t_naive:.2f} s)")
    print(f"{'face0 prep, 1 process':<48} {n / t_one:7.2f} images/s  ({t_one:.2f} s)")
    label = f"face0 prep, {args.processes} processes"
    print(f"{label:<48} {n / t_multi:7.2f} images/s  ({t_multi:.2f} s incl. merge; launch wall {wall:.1f} s)")
    print(
        f"speed-up over the naive loop: {t_naive / t_multi:.2f}x ({args.processes} processes), "
        f"{t_naive / t_one:.2f}x (1 process)"
    )


if __name__ == "__main__":
    main()
