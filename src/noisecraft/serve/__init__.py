"""Web app and HTTP API over pipelines and run directories (`noisecraft serve --runs DIR`).

Holds no model code: sampling goes through `noisecraft.pipeline` (its event stream gives the live preview), runs
are read as `noisecraft.rundir` writes them, and training runs as `python -m noisecraft train` processes.
Needs the `serve` extra (FastAPI, uvicorn, sse-starlette).
"""
from noisecraft.serve.app import create_app, serve
from noisecraft.serve.service import ServeConfig

__all__ = ["ServeConfig", "create_app", "serve"]
