"""Training: the loop every run shares (`loop`), the run directory (`run`) and the tasks it trains (`task`,
`diffusion`)."""
from noisecraft.train.loop import train

__all__ = ["train"]
