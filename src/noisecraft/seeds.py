"""The random streams of a training run, each seeded from (train.seed, the stream, the step or epoch) in this one
place, so no two streams share a seed and a run draws the same batches on any number of processes. The constants
are the ones the streams were first written with: runs train as they did."""
from __future__ import annotations

# stream: (prime the seed is multiplied by, offset added to the step)
STREAMS = {
    "order": (1_000_003, 0),  # the data order of an epoch (the step here is the epoch)
    "captions": (6_271, 1),  # which caption of each image's group a batch shows
    "flips": (7_919, 0),  # horizontal flips (data.hflip)
    "augment": (104_729, 7),  # non-leaking augmentation's draws
}


def stream_seed(seed: int, stream: str, step: int) -> int:
    """The seed of `stream` at `step` of a run seeded `seed`."""
    prime, offset = STREAMS[stream]
    return seed * prime + step + offset


def step_seed(seed: int, step: int) -> int:
    """The global torch seed of training step `step`: dropout, noise levels, noise, label dropout."""
    return (seed * 1_000_003 + step * 7_919 + 17) % (2**63 - 1)
