"""Training on several processes: ``torchrun --nproc_per_node=N -m core train DATA ...``.

torchrun starts N copies of the CLI with RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE
set; ``run_command`` turns that into one process group (NCCL on CUDA, one GPU per local
rank; gloo on CPU) and ``Ranks`` carries what the trainer needs.  Without torchrun (or
with one process) nothing here runs: ``SINGLE`` makes every hook a no-op.

The rules, so a run means the same thing on one process or many:
* ``--batch-size`` is the *global* batch: each rank takes ``ceil(global / world)`` images
  per step and DDP averages the gradients, so the step and its learning rate are those of
  the global batch.  (Growing the global batch is a separate choice; scale the rate with
  it, the linear rule.)
* Plain path: the training images are split among the ranks once (``train_share``, see
  ``data/shard_sampler.py``), so each rank decodes only its share, and each epoch
  (``set_epoch``) shuffles every share anew; padding repeats at most one image per rank
  so every rank takes the same number of steps.  Validation is sharded without padding (the sampler's order,
  padding dropped), and sums of loss, correct and count are reduced: the accuracy is
  exact, not a mean of means.
* Frozen fast path (``frozen_path.prepare_sharded``): each rank runs the body over its
  shard of images; the features are gathered so every rank holds all of them, then
  every rank trains the head alike (same seed, same order).  A head step costs
  microseconds: syncing its gradients would cost more than it saves, and identical
  ranks need no metric reduction.
* Rank 0 alone writes the run and prints; setup errors (bad data, bad weights) are
  agreed first so one line reports them.
* Collectives time out after ``TRANSFERLAB_DIST_TIMEOUT`` seconds (300): a hung peer
  cannot hold the others forever.  torchrun ends the other ranks (SIGTERM) when one dies,
  and one rank says why in one line.  If rank 0 lives, the epochs validated before the
  loss are whole: they are kept as a stopped run (``experiment.py``).  If rank 0 died, a
  survivor removes its half-written folder.
* A stop (Ctrl-C, or SIGTERM to torchrun, which forwards it) is a vote each rank casts at
  every batch: all stop at the same one, and rank 0 keeps the best epoch so far, as one
  process does.  A stop before the first validated epoch keeps nothing; so does a second
  Ctrl-C, which aborts.
"""
from __future__ import annotations

import dataclasses
import datetime
import gc
import os
import shutil
import signal
import socket
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

from core.data.shard_sampler import ShareShuffle, share_of, share_size
from core.device import gpus_short
from core.errors import ImageReadError, TransferLabError
from core.training.stop_signals import FORWARD_WINDOW_S, STOP_NOTICE, StopOnSignal, ignore_stops

DEFAULT_TIMEOUT_S = 300
SHARD_SEED = 1_000_003  # per-rank offset of augmentation seeds: ranks draw different crops


class AlreadyReported(Exception):
    """This rank stops because of an error that rank 0 reports."""


@dataclasses.dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device | None = None       # None: single process, the experiment picks
    peers: list = dataclasses.field(default_factory=list)  # (host, pid) per rank
    main_partial: str | None = None          # rank 0's run folder while it trains
    kept: dict | None = None                 # rank 0, a peer lost: the run saved from the epochs validated

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- data --------------------------------------------------------------------------
    def local_batch(self, global_batch: int) -> int:
        return -(-global_batch // self.world)

    def shard_len(self, n: int) -> int:
        """Training images per rank per epoch (the sampler pads to equal shards)."""
        return -(-n // self.world)

    def shard(self, items: list) -> list:
        """This rank's share for evaluation: DistributedSampler's unshuffled order
        (rank, rank + world, ...) without its padding, so nothing is counted twice."""
        return items[self.rank::self.world] if self.active else items

    def train_share(self, n: int, seed: int) -> list[int] | None:
        """The training images this rank decodes and trains on (shard_sampler.py), or None: all."""
        return share_of(n, self.world, self.rank, seed) if self.active else None

    def train_sampler(self, n: int, seed: int):
        """Its share in a new order each epoch, padded to ``shard_len(n)`` (None: one process)."""
        if not self.active:
            return None
        return ShareShuffle(share_size(n, self.world, self.rank), self.shard_len(n), seed, self.rank)

    def seed_offset(self, path: str) -> int:
        # Plain path: ranks see different images, so they draw different crops and dropout.
        # Frozen path: every rank trains the same head on the same features, in step.
        return self.rank * SHARD_SEED if self.active and path == "plain" else 0

    # ---- collectives -------------------------------------------------------------------
    def _comm(self) -> torch.device:
        return self.device if self.device is not None and self.device.type == "cuda" else torch.device("cpu")

    def sum(self, *values: float) -> list[float]:
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm())
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        return self.sum(float(flag))[0] > 0 if self.active else flag

    def from_main(self, compute):
        """``compute()`` on rank 0, its result on every rank (one measurement, one answer)."""
        if not self.active:
            return compute()
        box = [compute() if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_shards(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Rows computed by each rank on ``shard(items)``, back in the order of ``items``."""
        if not self.active:
            return local
        rows = self.shard_len(n)
        padded = torch.zeros((rows, *local.shape[1:]), dtype=local.dtype, device=self._comm())
        padded[:len(local)] = local
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        full = torch.empty((n, *local.shape[1:]), dtype=local.dtype)
        for r, part in enumerate(parts):
            full[r::self.world] = part[:len(range(r, n, self.world))].cpu()
        return full

    def agreed(self, setup):
        """``setup()`` on every rank; if it raised bad-input errors anywhere, rank 0 raises
        the first one and the others stop quietly, so the CLI prints one line."""
        if not self.active:
            return setup()
        try:
            out, failure = setup(), None
        except (TransferLabError, ValueError) as e:
            out, failure = None, e
        reports = [None] * self.world
        dist.all_gather_object(reports, None if failure is None else " ".join(str(failure).splitlines()))
        failed = [(r, msg) for r, msg in enumerate(reports) if msg is not None]
        if not failed:
            return out
        if not self.is_main:
            raise AlreadyReported
        # The others exit now and torchrun sends rank 0 SIGTERM: it must not cut the report short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if failure is not None:
            raise failure
        raise TransferLabError(f"rank {failed[0][0]}: {failed[0][1]}")

    def share_run_folder(self, partial) -> None:
        """Every rank learns where rank 0 writes, so a survivor can remove it if rank 0 dies."""
        if self.active:
            self.main_partial = self.from_main(lambda: str(partial) if partial else None)

    # ---- models ------------------------------------------------------------------------
    def wrap(self, model: torch.nn.Module):
        """DDP over what trains now (built per phase: DDP fixes its parameters when built)."""
        if not self.active:
            return model
        gc.collect()  # a previous phase's wrapper must be gone: its hooks sit on the parameters
        from torch.nn.parallel import DistributedDataParallel
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def no_sync(self, wrapped, last: bool):
        """Gradients of a micro-batch slice stay local; the batch's last slice reduces them."""
        if not last and hasattr(wrapped, "no_sync"):
            return wrapped.no_sync()
        return nullcontext()

    def sync_batchnorm(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.active:
            return model  # one process: nothing to synchronise
        if self.device.type != "cuda":
            raise TransferLabError("--sync-bn needs CUDA: torch's SyncBatchNorm trains on GPUs only "
                                   "(on CPU each rank's BatchNorm uses its own batch)")
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)

    # ---- failures ----------------------------------------------------------------------
    def dead_ranks(self, said: str | None = None) -> list[int]:
        """Ranks on this machine whose process is gone: without saying why (killed,
        crashed) by default, or having left with ``said`` ("error", "interrupt")."""
        here = socket.gethostname()
        return [r for r, (host, pid) in enumerate(self.peers)
                if r != self.rank and host == here and not _alive(pid) and _left(r) == said]

    def leave(self, why: str) -> None:
        """Say why this rank exits (an error it reported, an interrupt), for the others."""
        try:
            _marker_dir().mkdir(exist_ok=True)
            (_marker_dir() / str(self.rank)).write_text(why)
        except OSError:
            pass


SINGLE = Ranks()


def from_env() -> Ranks:
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Ranks()
    return Ranks(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def start(ranks: Ranks, device_name: str) -> None:
    """Join the process group torchrun described: NCCL with one GPU per local rank, or gloo on CPU."""
    if device_name == "mps":
        raise TransferLabError("several processes train on CUDA (NCCL) or CPU (gloo), not on Apple's MPS")
    if device_name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda asked for, but no CUDA GPU is available here")
    cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if cuda:
        # Checked before anything starts (set_device died with "invalid device ordinal" and a
        # traceback); every local process sees the same counts: local rank 0 says why.
        local = max(int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0), ranks.local_rank + 1)
        if (short := gpus_short(local)) is not None:
            raise TransferLabError(short) if ranks.local_rank == 0 else AlreadyReported()
        torch.cuda.set_device(ranks.local_rank)
        ranks.device = torch.device("cuda", ranks.local_rank)
    else:
        ranks.device = torch.device("cpu")
    timeout = datetime.timedelta(seconds=float(os.environ.get("TRANSFERLAB_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout, device_id=ranks.device if cuda else None)
    ranks.peers = [None] * ranks.world
    dist.all_gather_object(ranks.peers, (socket.gethostname(), os.getpid()))


def run_command(device_name: str, command) -> int:
    """``command(ranks, stop)`` -> exit status, under torchrun or not.  ``stop`` is the
    event a first Ctrl-C or SIGTERM sets (``stop_signals.py``: the best epoch so far is
    kept; a later signal aborts).  Single process: errors go to the CLI's own handlers.
    Under torchrun: errors, aborts and lost peers become one line from one rank (see the
    module docstring)."""
    ranks = from_env()
    signals = StopOnSignal(STOP_NOTICE if ranks.is_main else None, FORWARD_WINDOW_S if ranks.active else 0.0).install()
    if not ranks.active:
        try:
            return command(ranks, signals.event)
        finally:
            signals.restore()
    ended_well = False
    try:
        start(ranks, device_name)
        status = command(ranks, signals.event)
        ended_well = True
        return status
    except AlreadyReported:
        return 2
    except KeyboardInterrupt:
        return _stopped(ranks, None)
    except (TransferLabError, ValueError) as e:
        ignore_stops()
        ranks.leave("error")
        who = "" if ranks.is_main else f"rank {ranks.rank}: "
        named = f"{e.name}: " if isinstance(e, ImageReadError) and e.name else ""  # as the CLI names a bad image
        print(f"error: {who}{named}{' '.join(str(e).splitlines())}", file=sys.stderr, flush=True)
        return 2
    except RuntimeError as e:  # a collective failed: a peer died, or did not answer in time
        ignore_stops()  # before the checks: torchrun's SIGTERM may land while they run
        if lost_peer(ranks, e):
            return _stopped(ranks, e)
        raise  # a bug on this rank: its traceback is the report
    finally:
        if ended_well:  # after a failure the process only exits: a late SIGTERM must not add a line
            signals.restore()
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - a broken group: the process exits anyway
                pass


def lost_peer(ranks: Ranks, error: BaseException) -> bool:
    """A collective failed because another rank died or stopped answering (not a bug here)."""
    return ranks.active and isinstance(error, RuntimeError) and (isinstance(error, dist.DistError)
                                                                 or bool(ranks.dead_ranks()))


def _stopped(ranks: Ranks, error: Exception | None) -> int:
    """One line for an interrupt or a lost peer, from the lowest rank still running."""
    # torchrun SIGTERMs the survivors when a rank dies, often while this one is already
    # reporting it: that second stop must not print "interrupted" on top (CI saw both lines).
    ignore_stops()
    ranks.leave("interrupt")
    dead = ranks.dead_ranks()
    if not dead and ranks.dead_ranks(said="error"):
        return 1  # a peer failed and said why in its own error line; torchrun ends the rest
    if 0 in dead and ranks.main_partial:
        shutil.rmtree(ranks.main_partial, ignore_errors=True)  # rank 0 could not clean up: do it here
    living = [r for r in range(ranks.world) if r not in dead]
    speaks = ranks.rank == living[0]
    kept = (f"all ranks stopped; kept epoch {ranks.kept['epoch']} (val acc {ranks.kept['val_acc']:.3f}) "
            f"as a stopped run: {ranks.kept['run_dir']}") if ranks.kept else "all ranks stopped and no run was saved"
    if dead:
        pid = ranks.peers[dead[0]][1]
        msg = f"rank {dead[0]} of {ranks.world} (pid {pid}) ended unexpectedly; {kept}"
    elif error is None:
        msg, speaks = "interrupted", ranks.is_main  # as the single-process CLI's Ctrl-C
    else:
        reason = " ".join(str(error).split())[:200]
        msg = f"lost contact with another rank ({reason}); {kept}"
    if speaks:
        print(f"error: {msg}", file=sys.stderr, flush=True)
    return 130 if error is None and not dead else 1


def _marker_dir() -> Path:
    # One folder per torchrun launch on this machine: the workers share their parent.
    return Path(tempfile.gettempdir()) / f"transferlab-ranks-{os.getppid()}-{os.environ.get('MASTER_PORT', '')}"


def _left(rank: int) -> str | None:
    try:
        return (_marker_dir() / str(rank)).read_text() or "interrupt"
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie has ended
    except OSError:
        if not os.path.isdir("/proc"):
            try:
                os.kill(pid, 0)
                return True
            except OSError:
                return False
        return False
