"""noisecraft: train, sample and evaluate image diffusion models on small-image datasets."""
__version__ = "0.1.0"
