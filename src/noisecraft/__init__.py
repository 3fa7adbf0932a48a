"""noisecraft: train, sample and evaluate image diffusion models on small-image datasets."""
__version__ = "0.1.0"

# The pipeline imports torch; `import noisecraft` (the CLI's first step) must not, so these load on first use.
_LAZY = {"load_pipeline": "noisecraft.pipeline", "Pipeline": "noisecraft.pipeline",
         "SamplingOptions": "noisecraft.pipeline", "SampleEvent": "noisecraft.pipeline"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'noisecraft' has no attribute '{name}'")


__all__ = ["Pipeline", "SampleEvent", "SamplingOptions", "__version__", "load_pipeline"]
