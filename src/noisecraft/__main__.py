"""`python -m noisecraft ...` (also what `torchrun -m noisecraft` runs)."""
from noisecraft.cli import entrypoint

entrypoint()
