"""What the web server costs and gains: time to the first preview frame, images/s for 1 vs 8 concurrent clients
(the gain of batching their jobs into one sampler call), and a job through the server vs `pipe.generate`.

    python benchmarks/serve_latency.py [--checkpoint RUN] [--n 1 4] [--steps 20] [--rounds 5] [--threads 0]

The server runs in this process (uvicorn on a loopback port, as `noisecraft serve` runs it) and clients talk
HTTP to it with httpx: POST /api/generate, then the job's server-sent events to `done`, then its PNGs. Without
--checkpoint the model is the digits preset's network with untrained weights (the speed is the architecture's),
saved as a run directory. Every client asks for --n class-conditional images with the model's guidance (w = 1
above sigma 2 for digits), DDIM --steps, its own seeds; rounds are interleaved so load from other processes
hits every way alike, and medians are reported. Prints a table and JSON, and writes
`--out/serve_latency.json` with the machine record (common.machine: CPU model, ISA flags, torch threads).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

from noisecraft.checkpoint import save_checkpoint  # noqa: E402
from noisecraft.config import preset  # noqa: E402
from noisecraft.models import build_model, count_parameters  # noqa: E402
from noisecraft.pipeline import load_pipeline  # noqa: E402
from noisecraft.serve import ServeConfig, create_app  # noqa: E402

from common.machine import describe, record
from common.results import write_result


def untrained_digits_run(root: Path) -> Path:
    """A run directory holding the digits preset's network (0.88M parameters) with its initial weights."""
    cfg = preset("digits")
    cfg.model.in_channels, cfg.model.image_size, cfg.model.num_classes = 1, 28, 10
    torch.manual_seed(0)
    net = build_model(cfg.model)
    run = root / "digits"
    (run / "checkpoints").mkdir(parents=True)
    cfg.save(run / "config.json")
    save_checkpoint(run / "checkpoints" / "best.safetensors", modules={"net": net, "net_ema": copy.deepcopy(net)},
                    optimizers={}, config=cfg, step=0, class_names=[str(i) for i in range(10)])
    return run


class Server:
    """`noisecraft serve` in a thread of this process."""

    def __init__(self, runs: Path, threads: int):
        import uvicorn

        self.app = create_app(ServeConfig(runs=runs, device="cpu", threads=threads, max_queue=64))
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def one_job(url: str, body: dict) -> dict:
    """POST a job, follow its events to the end, fetch its images: wall times of the first preview and of all."""
    with httpx.Client(base_url=url, timeout=300) as c:
        t0 = time.perf_counter()
        job = c.post("/api/generate", json=body).json()
        first, event = None, None
        with c.stream("GET", f"/api/jobs/{job['id']}/events") as r:
            for line in r.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "progress" and first is None:
                    if json.loads(line[5:])["preview"]:
                        first = time.perf_counter() - t0
                elif line.startswith("data:") and event in ("done", "cancelled", "error"):
                    images = [c.get(img["url"]).content for img in json.loads(line[5:]).get("images", [])]
                    break
        total = time.perf_counter() - t0
    if event != "done":
        raise RuntimeError(f"job ended with {event}")
    return {"first_preview_s": first, "total_s": total, "images": len(images)}


def concurrent(url: str, bodies: list[dict]) -> float:
    """Wall seconds for len(bodies) clients, each with one job, all at once."""
    threads = [threading.Thread(target=one_job, args=(url, b)) for b in bodies]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def job_body(k: int, n: int, steps: int) -> dict:
    """Client k's request: its own class and seeds, the same settings as every other client."""
    return {"model": "digits", "n": n, "steps": steps, "sampler": "ddim", "seed": 1000 * k, "class_index": k % 10}


def measure(url: str, pipe, n: int, steps: int, rounds: int) -> dict[str, list[float]]:
    """Seconds of each way, `rounds` interleaved rounds (after a warm-up of each)."""
    one_job(url, job_body(99, n, steps))  # warm-up: the checkpoint into the server's cache, first-call costs
    pipe.generate(n, class_index=0, steps=steps, sampler="ddim", seed=0)
    s = {k: [] for k in ("first_preview_s", "stream_first_step_s", "server_job_s", "generate_s", "clients1_s",
                         "clients8_s")}
    for _ in range(rounds):
        r = one_job(url, job_body(0, n, steps))
        s["first_preview_s"].append(r["first_preview_s"])
        s["server_job_s"].append(r["total_s"])
        t0 = time.perf_counter()
        for _ev in pipe.stream(n, class_index=0, steps=steps, sampler="ddim", seed=0, preview_every=1):
            s["stream_first_step_s"].append(time.perf_counter() - t0)  # the same job's first step, in process
            break
        t0 = time.perf_counter()
        pipe.generate(n, class_index=0, steps=steps, sampler="ddim", seed=0)
        s["generate_s"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for k in range(8):  # one client, eight jobs one after another
            one_job(url, job_body(k, n, steps))
        s["clients1_s"].append(time.perf_counter() - t0)
        s["clients8_s"].append(concurrent(url, [job_body(k, n, steps) for k in range(8)]))
    return s


def summary(s: dict[str, list[float]], n: int) -> dict:
    med = {k: statistics.median(v) for k, v in s.items()}
    return {"n_per_job": n, "time_to_first_preview_s": round(med["first_preview_s"], 4),
            "in_process_first_step_s": round(med["stream_first_step_s"], 4),
            "server_job_s": round(med["server_job_s"], 4), "generate_s": round(med["generate_s"], 4),
            "server_overhead_ratio": round(med["server_job_s"] / med["generate_s"], 4),
            "images_per_s_1_client": round(8 * n / med["clients1_s"], 2),
            "images_per_s_8_clients": round(8 * n / med["clients8_s"], 2),
            "batching_gain": round(med["clients1_s"] / med["clients8_s"], 3),
            "seconds": {k: [round(x, 4) for x in v] for k, v in s.items()}}


def report(result: dict) -> None:
    print(f"DDIM {result['steps']}, w = {result['guidance']:g}, {result['params']} parameters, on "
          f"{describe(result)}, medians of {result['rounds']} interleaved rounds")
    for r in result["rows"]:
        print(f"  {r['n_per_job']} image(s) a job:")
        print(f"    time to first preview frame  {r['time_to_first_preview_s']:.3f} s  (in process, the first step "
              f"event: {r['in_process_first_step_s']:.3f} s)")
        print(f"    one job via the server       {r['server_job_s']:.3f} s  vs pipe.generate {r['generate_s']:.3f} s"
              f"  (x{r['server_overhead_ratio']:.3f})")
        print(f"    1 client, 8 jobs in turn     {r['images_per_s_1_client']:.1f} images/s")
        print(f"    8 clients at once            {r['images_per_s_8_clients']:.1f} images/s  (batching gain "
              f"x{r['batching_gain']:.2f})")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="a run directory named digits to serve (default: the digits network, "
                   "untrained)")
    p.add_argument("--n", type=int, nargs="+", default=[1, 4], help="images per job (one row each)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.checkpoint) if args.checkpoint else untrained_digits_run(Path(tmp))
        if run.name != "digits":
            raise SystemExit("--checkpoint: name the run directory 'digits' (the server serves it by that name)")
        pipe = load_pipeline(run, "cpu")
        with Server(run.parent, args.threads) as url:
            rows = [summary(measure(url, pipe, n, args.steps, args.rounds), n) for n in args.n]
    opts = pipe.resolve(steps=args.steps, sampler="ddim")
    result = {"benchmark": "serve_latency", "device": "cpu", "machine": record(opts.precision),
              "model": str(args.checkpoint or "digits preset network, untrained"),
              "params": count_parameters(pipe.denoiser.net), "steps": args.steps, "sampler": "ddim",
              "guidance": opts.guidance, "guidance_interval": list(opts.guidance_interval),
              "rounds": args.rounds, "rows": rows}
    report(result)
    write_result(result, args.out, "serve_latency")
    return result


if __name__ == "__main__":
    main()
