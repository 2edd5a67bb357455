"""What the per-batch stop vote costs under torchrun: ``Ranks.any`` (one all-reduce of one
number, then a read on the host) on 2 gloo processes on this machine, against a training
batch of the plain path.

    python bench/ddp_vote.py [--calls 2000]
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402


def _worker(rank: int, world: int, port: int, calls: int, out) -> None:
    from core.training.distributed import Ranks
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ranks = Ranks(rank=rank, world=world)
    for _ in range(50):  # warm-up
        ranks.any(False)
    samples = []
    for _ in range(5):
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(calls):
            ranks.any(False)
        samples.append((time.perf_counter() - t0) / calls * 1e6)
    if rank == 0:
        out.put(statistics.median(samples))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000)
    a = ap.parse_args()
    from core.device import cpu_line
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    mp.start_processes(_worker, args=(2, port, a.calls, out), nprocs=2, start_method="spawn")
    us = out.get()
    print(f"{cpu_line()}; torch {torch.__version__}")
    print(f"stop vote (Ranks.any, gloo, 2 processes): {us:.0f} µs per batch (median of 5 x {a.calls})")
    print("for scale: a plain-path batch of 32 MobileNetV2 images takes about 1-2 s on this CPU (bench: 18-25 img/s)")


if __name__ == "__main__":
    main()
