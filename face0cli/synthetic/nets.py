"""The synthetic world's two face networks: the conditioning embedder and the independent judge.

Both see a whole 64 x 64 portrait (the synthetic world's framing: the head fills the frame's middle), are
trained by the project on the training identities only, with a CosFace identity loss under the world's nuisance
(pose, light, style, clothes, background, accessories) plus augmentation (shifts, blur, colour jitter), and are
saved as safetensors + a JSON config.

- `FaceNet` (the embedder, InceptionResnetV1's stand-in): a stride-2 stem and three conv + BN + pool blocks,
  128-d L2-normalised output.
- `JudgeNet` (the judge of `face0 eval`): another architecture (residual blocks, wider, average pooling), another
  seed, a 64-d identity embedding plus attribute heads (hair colour, background, shirt, style, beard, glasses,
  hat), so the model is never graded by the encoder that conditions it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from face0cli.synthetic.portraits import COLOURS, HAIR, HAIR_OVERRIDE, STYLES

# attribute heads of the judge: name -> class names (hair: the visible colour, "bald" for none)
HEADS: dict[str, tuple[str, ...]] = {
    "hair": (*HAIR, *HAIR_OVERRIDE, "bald"),
    "background": tuple(COLOURS),
    "shirt": tuple(COLOURS),
    "style": STYLES,
    "beard": ("none", "beard", "moustache"),
    "glasses": ("no", "yes"),
    "hat": ("no", "yes"),
}


def attribute_labels(row: dict[str, Any]) -> dict[str, int]:
    """The judge's class index of each head for a truth row."""
    t, a = row["traits"], row["attributes"]
    hair = "bald" if t["hair_style"] == "bald" else (a["hair_override"] or t["hair"])
    values = {
        "hair": hair,
        "background": a["background"],
        "shirt": a["shirt"],
        "style": a["style"],
        "beard": t["beard"],
        "glasses": "yes" if a["glasses"] else "no",
        "hat": "yes" if a["hat"] else "no",
    }
    return {k: HEADS[k].index(v) for k, v in values.items()}


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class FaceNet(nn.Module):
    """The synthetic embedder: (B, 3, 64, 64) in [-1, 1] -> (B, dim) unit vectors."""

    def __init__(self, dim: int = 128, width: int = 32) -> None:
        super().__init__()
        self.config: dict[str, Any] = {"arch": "facenet", "dim": dim, "width": width}
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.body = nn.Sequential(_block(w, 2 * w), _block(2 * w, 4 * w), _block(4 * w, 8 * w))
        self.head = nn.Linear(8 * w * 16, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.stem(x)).flatten(1)
        return F.normalize(self.head(h), dim=1)


class _Res(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.na = nn.BatchNorm2d(c_out)
        self.b = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.nb = nn.BatchNorm2d(c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.na(self.a(x)))
        return F.silu(self.nb(self.b(h)) + self.skip(x))


class JudgeNet(nn.Module):
    """The judge: (B, 3, 64, 64) in [-1, 1] -> a (B, dim) unit identity vector and attribute logits."""

    def __init__(self, dim: int = 64, width: int = 48) -> None:
        super().__init__()
        self.config: dict[str, Any] = {"arch": "judge", "dim": dim, "width": width}
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            _Res(w, w, 2),
            _Res(w, 2 * w, 2),
            _Res(2 * w, 2 * w, 2),
            _Res(2 * w, 3 * w, 2),
        )
        self.id_head = nn.Sequential(nn.Flatten(), nn.Linear(3 * w * 16, 256), nn.SiLU(), nn.Linear(256, dim))
        self.heads = nn.ModuleDict({k: nn.Linear(3 * w * 16, len(v)) for k, v in HEADS.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.id_head(self.features(x)), dim=1)

    def attributes(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        return {k: head(h) for k, head in self.heads.items()}

    def both(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.body(x)
        flat = h.flatten(1)
        return F.normalize(self.id_head(h), dim=1), {k: head(flat) for k, head in self.heads.items()}


def build(config: dict[str, Any]) -> FaceNet | JudgeNet:
    arch = config["arch"]
    if arch == "facenet":
        return FaceNet(dim=config["dim"], width=config["width"])
    if arch == "judge":
        return JudgeNet(dim=config["dim"], width=config["width"])
    raise ValueError(f"unknown network {arch!r}")


def save_net(net: FaceNet | JudgeNet, folder: Path, extra: dict[str, Any]) -> None:
    """Write net as folder/model.safetensors + folder/config.json (config + extra)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({**net.config, **extra}, indent=2) + "\n", encoding="utf-8")


def load_net(folder: Path) -> tuple[FaceNet | JudgeNet, dict[str, Any]]:
    """The network saved by save_net, in eval mode (safetensors only)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    net = build(config)
    net.load_state_dict(load_file(str(folder / "model.safetensors")))
    return net.eval(), config


def to_input(images: np.ndarray) -> torch.Tensor:
    """(N, 64, 64, 3) uint8 -> (N, 3, 64, 64) float in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Small shifts, scale, blur and colour jitter (what a generated image differs by)."""
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3)
    s = 1 + (torch.rand(n, generator=g) - 0.5) * 0.12
    theta[:, 0, 0] = s
    theta[:, 1, 1] = s
    theta[:, :, 2] = (torch.rand(n, 2, generator=g) - 0.5) * 0.12
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    blur = torch.rand(n, generator=g) < 0.5
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :]) / 16
        xb = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), k.expand(3, 1, 3, 3).contiguous(), groups=3)
        x = x.clone()
        x[blur] = xb
    gain = 1 + (torch.rand(n, 3, 1, 1, generator=g) - 0.5) * 0.1
    return (x * gain).clamp(-1, 1)


class CosFace(nn.Module):
    """Large-margin cosine loss over class centres (CosFace): s * (cos - m) for the true class."""

    def __init__(self, dim: int, classes: int, s: float = 24.0, m: float = 0.25) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(classes, dim) / math.sqrt(dim))
        self.s, self.m = s, m

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cos = z @ F.normalize(self.w, dim=1).t()
        logits = self.s * (cos - self.m * F.one_hot(y, cos.shape[1]))
        return F.cross_entropy(logits, y)


def train_net(
    net: FaceNet | JudgeNet,
    images: np.ndarray,
    identities: np.ndarray,
    attributes: dict[str, np.ndarray] | None,
    *,
    steps: int,
    batch: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> list[float]:
    """Train an identity network (CosFace) and, for the judge, its attribute heads (cross-entropy).

    Args:
        images: (N, 64, 64, 3) uint8; identities: (N,) int class labels 0..K-1;
        attributes: head name -> (N,) int labels, or None (the embedder).

    Returns:
        the loss every 50 steps.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    classes = int(identities.max()) + 1
    loss_fn = CosFace(net.config["dim"], classes)
    params = list(net.parameters()) + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    x_all = to_input(images)
    y_all = torch.from_numpy(identities).long()
    a_all = {k: torch.from_numpy(v).long() for k, v in (attributes or {}).items()}
    net.train()
    curve: list[float] = []
    t0 = time.perf_counter()
    running = 0.0
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x_all), (batch,), generator=g)
        x = augment(x_all[idx], g)
        if isinstance(net, JudgeNet):
            z, logits = net.both(x)
            loss = loss_fn(z, y_all[idx]) + sum(F.cross_entropy(logits[k], a_all[k][idx]) for k in logits)
        else:
            loss = loss_fn(net(x), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach())
        if step % 50 == 0 or step == steps:
            curve.append(running / (50 if step % 50 == 0 else step % 50))
            log(f"step {step}/{steps} loss {curve[-1]:.3f} ({time.perf_counter() - t0:.0f} s)")
            running = 0.0
    return curve


@torch.no_grad()
def embed_images(net: FaceNet | JudgeNet, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, dim) float32 unit vectors of (N, 64, 64, 3) uint8 images."""
    net.eval()
    out = [net(to_input(images[i : i + batch])).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(out).astype(np.float32)


@torch.no_grad()
def judge_images(net: JudgeNet, images: np.ndarray, batch: int = 256) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Identity vectors and predicted attribute indices of (N, 64, 64, 3) uint8 images."""
    net.eval()
    zs, preds = [], {k: [] for k in HEADS}  # type: ignore[var-annotated]
    for i in range(0, len(images), batch):
        z, logits = net.both(to_input(images[i : i + batch]))
        zs.append(z.numpy())
        for k, v in logits.items():
            preds[k].append(v.argmax(1).numpy())
    return np.concatenate(zs).astype(np.float32), {k: np.concatenate(v) for k, v in preds.items()}


def identification(queries: np.ndarray, q_ids: np.ndarray, refs: np.ndarray, r_ids: np.ndarray) -> dict[str, float]:
    """Nearest-centroid identification and likeness gap of query vectors against reference vectors.

    Returns:
        {"accuracy": share whose nearest identity centroid is the right one, "gap": mean cosine to the right
        centroid minus the mean cosine to the others, "chance": 1 / identities}.
    """
    ids = np.unique(r_ids)
    cents = np.stack([refs[r_ids == i].mean(0) for i in ids])
    cents /= np.linalg.norm(cents, axis=1, keepdims=True)
    sims = queries @ cents.T
    right = np.searchsorted(ids, q_ids)
    acc = float(np.mean(ids[sims.argmax(1)] == q_ids))
    own = sims[np.arange(len(q_ids)), right]
    others = (sims.sum(1) - own) / max(len(ids) - 1, 1)
    return {"accuracy": acc, "gap": float(np.mean(own - others)), "chance": 1.0 / len(ids)}
