"""Helper for test_train: run `train` in each process of a multi-process launch (accelerate launch / torchrun).

    accelerate launch --multi_gpu --num_processes 2 tests/_train_launch.py BASE TRIPLETS OUT STEPS

Builds `Accelerator(cpu=True)` (gloo ranks on a CPU machine) and trains the tiny model for STEPS steps with a
checkpoint every 2 steps. Every process prints one JSON line with its rank, world size and the result it got.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from accelerate import Accelerator

from face0cli.config import TrainConfig
from face0cli.training.train import train


def main() -> None:
    base, triplets, out, steps = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    accelerator = Accelerator(cpu=True)
    cfg = TrainConfig(
        max_steps=steps,
        batch_size=2,
        lr=1e-3,
        lr_warmup_steps=0,
        resolution=32,
        num_workers=0,
        checkpoint_every=2,
        validate_every=steps,
        validation_steps=2,
        validation_faces=2,
        log_every=1,
        ema_decay=0.9,
        projector_hidden_dim=32,
    )
    result = train(cfg, triplets=triplets, out=out, base=base, accelerator=accelerator, show_progress=False)
    line = {"rank": accelerator.process_index, "world": accelerator.num_processes, "result": result.to_dict()}
    print("RESULT " + json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
