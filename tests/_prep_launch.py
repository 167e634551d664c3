"""Helper for test_prep: run `prep` in each process of a multi-process launch (accelerate launch / torchrun).

    accelerate launch --multi_gpu --num_processes 2 tests/_prep_launch.py DATASET OUT CHUNK_SIZE

Builds the seeded test embedder (random-init InceptionResnetV1, real MTCNN) and calls `prep` without a shard:
prep itself joins accelerate's PartialState, takes the shard of its rank and merges on the main process.
Every process prints one JSON line with its rank and the summary it got back.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from face0cli.config import PrepConfig
from face0cli.data.prep import prep
from face0cli.data.readers import open_dataset
from face0cli.faces.embedders import FacenetEmbedder


def main() -> None:
    dataset, out, chunk = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    summary = prep(
        open_dataset(dataset), out, FacenetEmbedder(seed=0), PrepConfig(chunk_size=chunk), show_progress=False
    )
    line = json.dumps({"rank": int(os.environ.get("RANK", -1)), "summary": summary.to_dict()})
    sys.stdout.write(line + "\n")  # one write: the ranks share the pipe
    sys.stdout.flush()


if __name__ == "__main__":
    main()
