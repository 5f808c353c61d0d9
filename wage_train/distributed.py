"""``wage-train --distributed``: the run as one process per host (or per GPU) of a multi-process JAX job.

Every process runs the same command. :func:`join` connects them with ``jax.distributed.initialize`` (the
coordinator, process count and id from the options, the environment, or a cluster JAX recognises: SLURM, Open
MPI, Kubernetes, cloud TPUs), and the run's mesh then spans the devices of every process. Then:

* every process draws the same global batches in the same order from the run's one seeded generator and
  prepares and places only its rows (:meth:`Job.rows`): the global arrays, so the run's bits, do not depend on
  the number of processes or devices (evaluation is split the same way);
* process 0 alone takes the run lock, tidies and fills the run folder, downloads, prints and writes metrics,
  plots and weights; checkpoints go through Orbax's multi-process support (process 0 writes the metadata);
* before training, :meth:`Job.together` exchanges every process's outcome (its one-line error, what process 0
  shares, the digests of the resolved configuration and data): one process's error, or a configuration that
  differs, stops every process with one line;
* during training JAX itself stops the job when a process dies: its coordination service ends every other
  process (after ``--distributed-timeout`` seconds without a heartbeat, at once when process 0, which hosts
  it, dies) with an abort and a C++ stack trace. Python cannot catch that, so :func:`_filter_output` passes the
  process's standard error and output through a small filter process that drops the runtime's records and says it in
  one line instead (the status stays the abort's, 134).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from wage_data import DataError
from wage_train.config import UsageError
from wage_train.safe_io import first_line

__all__ = ["Job", "join", "job"]

TIMEOUT_S = 120  # --distributed-timeout's default: JAX's are 300 s to join and 100 s of silence


@dataclass
class Exchange:
    """What one process puts into :meth:`Job.together`: ``share`` (process 0's reaches every process) and
    ``check`` (``{name: value}``, which must be equal on every process)."""

    share: dict[str, Any] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """This process's place in the job: ``Job(0, 1)`` for a one-process run."""

    process_id: int = 0
    num_processes: int = 1
    timeout_s: int = TIMEOUT_S  # how long :meth:`together` waits for the other processes

    @property
    def main(self) -> bool:
        """Process 0: the one that prints and writes the run's files."""
        return self.process_id == 0

    def rows(self, n: int) -> slice:
        """This process's rows of a global batch of ``n`` rows (``n`` divides by the process count): process ``i``
        has rows ``[i n/P, (i+1) n/P)``, the order ``jax.make_array_from_process_local_data`` assembles."""
        share = n // self.num_processes
        return slice(self.process_id * share, (self.process_id + 1) * share)

    @contextlib.contextmanager
    def together(self) -> Iterator[Exchange]:
        """A step every process takes before the next one starts. On leaving, every process's outcome is
        exchanged: a one-line error of this process is raised again; another process's error, or a ``check``
        value that differs from process 0's, raises :class:`UsageError` naming it; else ``share`` is replaced by
        process 0's. A one-process run only runs the block."""
        box, error = Exchange(), None
        try:
            yield box
        except (UsageError, DataError, ValueError) as e:
            error = e
        if self.num_processes > 1:
            outcome = {"error": str(error) if error else None, "share": box.share, "check": box.check}
            outcomes = _allgather(outcome, self.timeout_s)
            if error is None:
                self._verdict(outcomes, box)
        if error is not None:
            raise error

    def _verdict(self, outcomes: list[dict[str, Any]], box: Exchange) -> None:
        for i, o in enumerate(outcomes):
            if o["error"]:
                raise UsageError(f"process {i} of the job stopped: {o['error']}")
        main = outcomes[0]["check"]
        for i, o in enumerate(outcomes):
            differ = sorted(k for k in main.keys() | o["check"].keys() if main.get(k) != o["check"].get(k))
            if differ:
                raise UsageError(f"process {i} runs another configuration than process 0 ({', '.join(differ)} "
                                 "differ): every process must run the same command on the same data")
        box.share = outcomes[0]["share"]


_JOB = Job()


def job() -> Job:
    """The job this process is part of (:func:`join`), or ``Job(0, 1)``."""
    return _JOB


def digests(values: dict[str, Any]) -> dict[str, str]:
    """A short digest of each value (JSON), for :attr:`Exchange.check`: compared, not sent whole."""
    return {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:16] for k, v in values.items()}


def _allgather(outcome: dict[str, Any], timeout_s: int) -> list[dict[str, Any]]:
    """Every process's ``outcome`` (JSON), in process order, through the key-value store of JAX's coordination
    service (the one Orbax's barriers use): no device computation, so it also works where the processes'
    devices differ, which the check then reports."""
    from jax._src import distributed as jax_distributed

    client, step, n = jax_distributed.global_state.client, next(_STEPS), jax_distributed.global_state.num_processes
    client.key_value_set(f"wage-train/{step}/{jax_distributed.global_state.process_id}", json.dumps(outcome))
    outcomes = []
    for i in range(n):
        try:
            outcomes.append(json.loads(client.blocking_key_value_get(f"wage-train/{step}/{i}", 1000 * timeout_s)))
        except RuntimeError:  # jaxlib's XlaRuntimeError: DEADLINE_EXCEEDED
            raise UsageError(f"--distributed: process {i} did not finish preparing the run within {timeout_s} s "
                             "(--distributed-timeout)") from None
    return outcomes


_STEPS = itertools.count()  # the exchanges so far: each has its own keys


def _env_int(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"the environment variable {name}={text!r} must be an integer") from None


def join(coordinator: str | None, num_processes: int | None, process_id: int | None, timeout: int) -> Job:
    """Join the multi-process job (``jax.distributed.initialize``) before JAX starts its backend.

    Args:
        coordinator: ``HOST:PORT`` of process 0 (else ``JAX_COORDINATOR_ADDRESS``, else the cluster's).
        num_processes: the processes in the job (else ``JAX_NUM_PROCESSES``, else the cluster's).
        process_id: this process's index (else ``JAX_PROCESS_ID``, else the cluster's).
        timeout: seconds to wait for every process to join, and without a heartbeat before the job is stopped.

    Raises:
        UsageError: one line: no cluster detected and not given, or an id out of range. A job not joined within
            ``timeout`` (coordinator unreachable, a process missing or given another's id) ends the process: JAX
            aborts it, and the output filter says so in one line.
    """
    global _JOB
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise UsageError(f"--process-id {process_id}: must be in [0, {num_processes - 1}] for --num-processes "
                         f"{num_processes}")
    _filter_output(coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or "the cluster's coordinator", timeout)
    import jax

    try:  # a coordinator that does not answer in time ends the process (JAX's abort; the filter's one line)
        jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=timeout,
                                   heartbeat_timeout_seconds=timeout)
    except (ValueError, TypeError) as e:  # nothing given and no cluster detected
        raise UsageError(f"--distributed: no cluster environment detected ({first_line(e)}); give --coordinator "
                         "HOST:PORT --num-processes N --process-id I") from None
    _JOB = Job(jax.process_index(), jax.process_count(), timeout)
    return _JOB


# The filter process: passes its input to its output, but drops the records of JAX's distributed runtime (absl's
# "E1207 17:37:07.143545 17305 coordination_service.cc:1549] ..." and the lines written with them) and gloo's
# connection lines (two threads may interleave them). The fatal record that ends the process (with its stack
# trace) becomes one line once the process has ended, unless the process said its own (which may come after the
# record): a peer's death, or (the record names RegisterTask) the job never joined. It ignores SIGINT/SIGTERM.
_FILTER = r"""
import os, re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
record = re.compile(rb"^[IWEF]\d{4} [\d:.]+ +\d+ (\w+)\.(cc|h):\d+\] ")
runtime = re.compile(rb"coordination|client|service|distributed|preemption|gloo|grpc")
out, said, fatal, joining, pending = sys.stdout.buffer, False, False, False, b""
while chunk := os.read(0, 1 << 16):
    pending += chunk
    *lines, pending = pending.split(b"\n")
    dropping = False
    for line in lines:
        m = record.match(line)
        if line.startswith(b"wage-train: "):  # the process's own one line: always passed on
            dropping, said = False, True
        elif m and runtime.search(m.group(1)) or b"[Gloo] " in line or b"connected peer ranks" in line:
            dropping = True  # the rest of this write is the record's
            fatal = fatal or line.startswith(b"F")
        elif m:
            dropping = False
        joining = joining or fatal and b"RegisterTask" in line  # the job was never joined: no peer died
        if not (dropping or fatal) or line.startswith(b"wage-train: "):
            out.write(line + b"\n")
    if b"\r" in pending and not fatal:
        out.write(pending)  # a progress bar's redrawn line
        pending = b""
    out.flush()
if fatal and not said and sys.argv[1]:  # the process has ended: the one line, unless it said its own
    out.write(sys.argv[2 if joining else 1].encode() + b"\n")
elif not fatal:
    out.write(pending)
"""


def _filter_output(coordinator: str, timeout: int) -> None:
    """Route this process's standard error and output (file descriptors 2 and 1, so the C++ runtime's too) through
    :data:`_FILTER`; the fatal record's line goes to standard error."""
    lost = ("wage-train: error: another process of this job stopped (killed, or failed: see its output), so JAX "
            "ended this one; the last completed checkpoint is intact: continue the run with --resume")
    unjoined = (f"wage-train: error: --distributed: could not join the job at {coordinator} within {timeout} s (the "
                "coordinator unreachable, or a process missing or started with another's --process-id); start "
                "every process with the same --coordinator and --num-processes and its own --process-id")
    for fd, stream, said in ((2, sys.stderr, (lost, unjoined)), (1, sys.stdout, ("", ""))):
        read, write = os.pipe()
        target = os.dup(fd)
        subprocess.Popen([sys.executable, "-c", _FILTER, *said], stdin=read, stdout=target, close_fds=True,
                         start_new_session=True)
        os.close(read)
        os.close(target)
        stream.flush()
        os.dup2(write, fd)
        os.close(write)
