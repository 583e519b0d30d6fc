"""The batch on Ray: one model per worker (a Ray actor, loaded once), one task per image pair.

Ray is an optional extra, imported only inside :func:`run_batch_on_ray` (the core, the nodes and
the rest of the command line never import it). :class:`LamaWorker` is plain Python: each Ray actor
runs one, and the tests call it without Ray. It builds the local run's :class:`.Inpainter` from the
same settings and runs each job through :func:`.runner.run_job`, so outputs, per-file errors,
skips and warnings are the local run's; with the same torch build, hardware and number of threads
(``--ray-cpus-per-worker`` against the local run's torch threads) the outputs are bit-identical.

Every node must see the model, the inputs and the output folder under the same paths (a shared
file system); the driver ships its own copy of the pack's code to the workers (:func:`_shipped_code`).
Outputs are written atomically by the workers, so a worker killed mid-file leaves at most a
temporary file, which the restarted worker (or the next run) removes. Ray restarts a dead worker (``RESTARTS_PER_WORKER``)
and retries the file it was processing (``RETRIES_PER_FILE``); a file that still fails is reported
like any failed file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..ffc import CheckpointError, load_generator
from ..refine import RefineSettings

from .device import UsageError, resolve_device, resolve_dtype
from .inpainter import Inpainter, MaskOptions, PlainOptions
from .io import prepare_output_folder
from .pairing import Job
from .progress import DONE, FAILED, Outcome, ProgressReporter, Summary
from .runner import _first_line, run_job

__all__ = [
    "LOCAL", "RAY_REQUIREMENT", "RETRIES_PER_FILE", "RESTARTS_PER_WORKER", "ClusterError", "ClusterOptions",
    "WorkerSettings", "WorkerInfo", "LamaWorker", "import_ray", "run_batch_on_ray",
]

LOCAL = "local"  # --ray without an address: start a new local Ray instance
RAY_REQUIREMENT = "ray>=2.9"  # the pack's optional "ray" extra (pyproject.toml); tested with 2.60.0
RETRIES_PER_FILE = 2  # a file whose worker dies is tried this many more times on the restarted worker
RESTARTS_PER_WORKER = 4
_POLL_S = 0.5  # ray.wait() returns this often, so that Ctrl-C and SIGTERM are handled promptly
_SHIPPED = ("ffc", "refine", "lama_cli", "nodes")  # the pack's code that the workers get (runtime_env py_modules)
_LogRecord = tuple[str, int, str]  # (logger name, level, message)

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """Ray cannot be reached, or cannot run a worker; the message names the address or the node."""


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how wide the batch runs (``--ray``, ``--ray-*``)."""

    address: str = LOCAL  # LOCAL, "auto" (the cluster started on this machine) or HOST:PORT of the head
    workers: int | None = None  # None: as many as the cluster's GPUs (or CPUs) allow
    cpus_per_worker: int = 1  # also the worker's torch threads
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs and the device may be cuda
    timeout_s: float = 30.0  # bound on reaching a cluster

    def __post_init__(self) -> None:
        _host_port(self.address)  # a malformed address is a usage error before anything starts


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to build the local run's :class:`.Inpainter` (picklable; absolute paths)."""

    model: Path
    device: str  # "cpu", "cuda" or "mps", resolved on the worker
    dtype: str  # "fp32" or "bf16"
    mode: str
    mask_options: MaskOptions
    plain_options: PlainOptions
    refine_settings: RefineSettings
    output_folder: Path
    output_format: str
    overwrite: bool
    device_was_auto: bool = False  # bf16 falls back to fp32 on a device without it, as --device auto does
    threads: int | None = None  # torch intra-op threads; None: leave them as they are


@dataclass(frozen=True)
class WorkerInfo:
    """Who a worker is and how it is doing; ``error`` set means it could not load the model."""

    host: str
    pid: int
    device: str = ""
    dtype: str = ""
    model: str = ""  # ModelInfo.describe()
    error: str | None = None
    files: int = 0  # files written
    peak_rss_bytes: int = 0  # the process's resident-set high-water mark
    log: tuple[_LogRecord, ...] = ()  # warnings logged while loading


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[_LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelno, record.getMessage()))


@contextlib.contextmanager
def _captured_warnings() -> Iterator[list[_LogRecord]]:
    """Warnings logged meanwhile (a worker's console is not the user's): the driver logs them again."""
    handler = _Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)


def _peak_rss_bytes() -> int:
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


class LamaWorker:
    """The model on one worker, loaded once; :meth:`process` per job. Ray runs one per actor."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.host = socket.gethostname()
        self.inpainter: Inpainter | None = None
        self.files = 0
        self.error: str | None = None
        self.device = self.dtype = self.model = ""
        with _captured_warnings() as records:
            try:
                self._load()
            except (CheckpointError, UsageError, OSError, RuntimeError) as err:
                self.error = str(err)
        self.load_log = tuple(records)

    def _load(self) -> None:
        settings = self.settings
        shared = "; with --ray every node must see the same paths (a shared file system)"
        if not settings.output_folder.is_dir():
            raise UsageError(f"output folder {settings.output_folder} does not exist on {self.host}{shared}")
        if not settings.model.is_file():
            raise UsageError(f"model {settings.model} does not exist on {self.host}{shared}")
        try:
            # Proves the folder writable from this node and removes what a killed worker left here.
            prepare_output_folder(settings.output_folder)
        except OSError as err:
            raise UsageError(f"cannot write to the output folder {settings.output_folder} on {self.host}: "
                             f"{err.strerror or err}") from err
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device, device_was_auto=settings.device_was_auto)
        generator, info = load_generator(settings.model)
        self.inpainter = Inpainter(
            generator, device=device, dtype=dtype, mode=settings.mode, mask_options=settings.mask_options,
            plain_options=settings.plain_options, refine_settings=settings.refine_settings,
        )
        self.device, self.dtype, self.model = str(device), dtype, info.describe()

    def info(self) -> WorkerInfo:
        """Identity, model, and the memory high-water mark so far."""
        return WorkerInfo(self.host, os.getpid(), self.device, self.dtype, self.model, self.error, self.files,
                          _peak_rss_bytes(), self.load_log)

    def process(self, job: Job) -> tuple[Outcome, tuple[_LogRecord, ...]]:
        """Read, inpaint and write one job, as the local run does; (outcome, warnings logged meanwhile)."""
        if self.inpainter is None:
            return Outcome(job.name, FAILED, f"the worker has no model: {self.error}"), ()
        with _captured_warnings() as records:
            outcome = run_job(job, self.inpainter, None, self.settings.output_format, overwrite=self.settings.overwrite)
        self.files += outcome.status == DONE
        return outcome, tuple(records)


# --- the driver ---------------------------------------------------------------------------------

def import_ray():
    """The ``ray`` module, or a UsageError that says how to install it."""
    try:
        import ray
    except ImportError as err:
        raise UsageError(f'--ray needs Ray, an optional extra of this pack: pip install "{RAY_REQUIREMENT}" '
                         f"(on a cluster, the version the cluster runs) [{err}]") from err
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of an address to probe; None for ``local`` and ``auto`` (found by Ray itself)."""
    if address in (LOCAL, "auto"):
        return None
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not host or not port.isdigit():
        raise UsageError(f"--ray {address}: expected HOST:PORT of the cluster's head (its GCS port, 6379 "
                         "unless changed), 'auto', or no address for a new local instance")
    return host.strip("[]"), int(port)


def _probe(address: str, timeout_s: float) -> None:
    """Fail within ``timeout_s`` when nothing listens at the address (Ray itself waits minutes)."""
    target = _host_port(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout_s).close()
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise ClusterError(f"--ray {address}: cannot reach a Ray cluster at {target[0]}:{target[1]} within "
                           f"{timeout_s:g} s ({reason}); is its head running (ray start --head) and the port "
                           "open?") from err


class _NotFromThisThread(logging.Filter):
    """Ray's notice that it leaves SIGTERM alone when initialised from a thread: we want exactly that."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


@contextlib.contextmanager
def _shipped_code() -> Iterator[dict]:
    """The runtime_env that gives every worker this process's copy of the pack, under its package name.

    Ray names a shipped folder after its basename, and the checkout's folder can have any name
    (even ``ray``); so the pack's Python files are copied into ``<temporary>/<package name>/``.
    Shipping them, rather than relying on what a node has installed, runs the driver's code on
    every worker. The copy is only needed until ``ray.init`` has uploaded it.
    """
    package = __name__.rsplit(".", 2)[0]  # lama_multiscale_refine (this module is <package>.lama_cli.ray_runner)
    if "." in package:
        raise UsageError(f"--ray needs the pack imported as a top-level package, not as {package}")
    root = Path(__file__).resolve().parents[1]
    staging = Path(tempfile.mkdtemp(prefix="lama_cli_ray_"))
    try:
        target = staging / package
        target.mkdir()
        shutil.copy2(root / "__init__.py", target / "__init__.py")
        for folder in _SHIPPED:
            for source in (root / folder).rglob("*.py"):
                if "__pycache__" not in source.parts:
                    (target / source.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, target / source.relative_to(root))
        yield {"py_modules": [str(target)], "excludes": ["__pycache__", "*.pyc"]}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _start_local(ray, kwargs: dict) -> None:
    """A new local instance, started from this thread: its processes get a parent-death signal
    tied to the starting thread, so a helper thread that ends would take them with it."""
    handler = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        ray.init(address="local", include_dashboard=False, **kwargs)
    except Exception as err:  # Ray raises several kinds (RuntimeError, ConnectionError, OSError, ValueError)
        raise ClusterError(f"--ray: could not start a local Ray instance: {_first_line(err)}") from err
    finally:
        if handler is not None:  # ray.init installs its own (sys.exit); ours reports SIGTERM as exit 143
            signal.signal(signal.SIGTERM, handler)


def _join(ray, address: str, timeout_s: float, kwargs: dict) -> None:
    """Join a cluster within ``timeout_s``. ``ray.init`` runs in a thread: it cannot be cancelled,
    and on a port that accepts connections but is not Ray's it waits for minutes."""
    _probe(address, timeout_s)
    failure: list[BaseException] = []

    def init() -> None:
        try:
            ray.init(address=address, **kwargs)
        except BaseException as err:  # handed to the calling thread, which reports it
            failure.append(err)

    quiet = _NotFromThisThread()
    ray_log = logging.getLogger("ray._private.worker")
    ray_log.addFilter(quiet)
    thread = threading.Thread(target=init, name="lama_cli-ray-init", daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + timeout_s
        while thread.is_alive():
            thread.join(0.2)  # short waits: Ctrl-C stays responsive
            if time.monotonic() > deadline and thread.is_alive():
                raise ClusterError(f"--ray {address}: something answers there but no Ray cluster connected within "
                                   f"{timeout_s:g} s (the head's GCS port is 6379 unless changed; see `ray status`)")
    finally:
        ray_log.removeFilter(quiet)
    if failure:
        raise ClusterError(f"--ray {address}: {_first_line(failure[0])}") from failure[0]


def _connect(ray, address: str, timeout_s: float) -> None:
    """Start a local instance (``LOCAL``) or join the cluster at ``address``; the workers get the pack's code."""
    with _shipped_code() as runtime_env:
        kwargs = {"log_to_driver": False, "logging_level": logging.WARNING, "runtime_env": runtime_env}
        if address == LOCAL:
            _start_local(ray, kwargs)
        else:
            _join(ray, address, timeout_s, kwargs)


@dataclass(frozen=True)
class _Shape:
    device: str
    gpus: float
    workers: int


def _shape(ray, options: ClusterOptions, device: str, runnable: int) -> tuple[_Shape, str | None]:
    """Device, GPUs and number of workers from the options and the cluster; plus a note or None."""
    cpus = options.cpus_per_worker
    gpus_in_cluster = ray.cluster_resources().get("GPU", 0.0)
    gpus = options.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if device in ("auto", "cuda") and gpus_in_cluster >= 1 else 0.0
    if device == "cuda" and gpus == 0:
        raise UsageError("--device cuda with --ray: the cluster has no GPU" if gpus_in_cluster == 0
                         else "--device cuda with --ray needs --ray-gpus-per-worker above 0")
    if device in ("cpu", "mps") and gpus > 0:
        raise UsageError(f"--ray-gpus-per-worker {gpus:g} with --device {device}: the workers would hold GPUs they "
                         "do not use (use --device auto or cuda)")
    if gpus > 1 and gpus != int(gpus):
        raise UsageError(f"--ray-gpus-per-worker {gpus:g}: above 1 it must be a whole number of GPUs")
    # Without a GPU reserved, Ray still shows the worker every GPU: "auto" must not pick one.
    worker_device = "cuda" if gpus > 0 else ("cpu" if device == "auto" else device)

    def fits(resources: dict) -> int:
        by_cpu = math.floor(resources.get("CPU", 0.0) / cpus)
        return min(by_cpu, math.floor(resources.get("GPU", 0.0) / gpus + 1e-9)) if gpus else by_cpu

    capacity = sum(fits(node["Resources"]) for node in ray.nodes() if node.get("Alive"))
    need = f"{cpus} CPU{'s' if cpus > 1 else ''}" + (f" and {gpus:g} GPU" if gpus else "")
    if capacity == 0:
        raise ClusterError(f"no node of the Ray cluster has {need} for one worker "
                           "(lower --ray-cpus-per-worker or --ray-gpus-per-worker)")
    workers = min(options.workers or capacity, runnable)
    note = None
    if options.workers and options.workers > capacity:
        note = (f"--ray-workers {options.workers}: the cluster holds {capacity} workers of {need} now; "
                "the others start when it has room")
    return _Shape(worker_device, gpus, workers), note


def _absolute(job: Job) -> Job:
    # A worker's working folder is not the driver's.
    return replace(job, **{name: getattr(job, name).absolute() for name in ("image", "mask", "output")
                           if getattr(job, name) is not None})


def _log_again(records: tuple[_LogRecord, ...], seen: set[_LogRecord]) -> None:
    for record in records:
        if record not in seen:
            seen.add(record)
            logging.getLogger(record[0]).log(record[1], record[2])


class _Batch:
    """The driver's loop: each worker gets the next job when it has finished one (one in flight
    per worker, so a failed task names the file its worker was processing)."""

    def __init__(self, ray, jobs: list[Job], reporter: ProgressReporter, summary: Summary) -> None:
        self.ray, self.jobs, self.reporter, self.summary = ray, jobs, reporter, summary
        self.order: dict[int, int] = {}  # id(outcome) -> job index
        self.seen: set[_LogRecord] = set()  # warnings already logged again
        self.queue: deque[int] = deque()  # job indices not yet given to a worker
        self.remote_jobs: dict[int, Job] = {}
        self.starting: dict = {}  # info ref -> (actor, restarted): workers not (or no longer) up
        self.busy: dict = {}  # process ref -> (actor, job index)
        self.first: dict = {}  # actor -> its WorkerInfo when it first came up
        self.shape_text = ""  # the line that announces the workers; .format(device=..., dtype=...)

    def record(self, index: int, outcome: Outcome) -> None:
        job = self.jobs[index]
        self.reporter.start(len(self.summary.outcomes), len(self.jobs), job.name)
        self.summary.outcomes.append(outcome)
        self.order[id(outcome)] = index
        self.reporter.finish(outcome, str(job.output) if job.output else None)

    def in_job_order(self) -> None:
        self.summary.outcomes.sort(key=lambda outcome: self.order[id(outcome)])

    def run(self, settings: WorkerSettings, shape: _Shape, options: ClusterOptions, runnable: list[int],
            where: str) -> list[WorkerInfo]:
        """Start ``shape.workers`` workers and run the ``runnable`` jobs; the workers' final statistics."""
        ray = self.ray
        worker_class = ray.remote(LamaWorker).options(
            num_cpus=options.cpus_per_worker, num_gpus=shape.gpus,
            max_restarts=RESTARTS_PER_WORKER, max_task_retries=RETRIES_PER_FILE,
        )
        settings = replace(settings, device=shape.device, threads=options.cpus_per_worker)
        self.remote_jobs = {index: _absolute(self.jobs[index]) for index in runnable}
        self.queue = deque(runnable)
        actors = [worker_class.remote(settings) for _ in range(shape.workers)]
        self.starting = {actor.info.remote(): (actor, False) for actor in actors}
        workers, cpus = shape.workers, options.cpus_per_worker
        self.shape_text = (f"{settings.mode} on Ray ({where}): {workers} worker{'s' if workers > 1 else ''} on "
                           f"{{device}} ({{dtype}}), {cpus} CPU{'s' if cpus > 1 else ''} and {shape.gpus:g} GPU each")
        try:
            while self.queue or self.busy:
                if not self.starting and not self.busy:
                    for index in self.queue:
                        self.record(index, Outcome(self.jobs[index].name, FAILED, "not run: no Ray worker is left"))
                    break
                done, _ = ray.wait([*self.starting, *self.busy], num_returns=1, timeout=_POLL_S)
                for ref in done:
                    if ref in self.starting:
                        self._worker_up(ref)
                    else:
                        self._job_done(ref)
            return self._final_infos()
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)

    def _give_work(self, actor) -> None:
        if self.queue:
            index = self.queue.popleft()
            self.busy[actor.process.remote(self.remote_jobs[index])] = (actor, index)

    def _worker_up(self, ref) -> None:
        ray = self.ray
        actor, restarted = self.starting.pop(ref)
        try:
            info = ray.get(ref)
        except ray.exceptions.RayError as err:
            log.warning("a Ray worker %s: %s", "died and cannot be restarted" if restarted else "could not start",
                        _first_line(err))
            return
        if info.error:
            raise ClusterError(f"{info.error} (Ray worker on {info.host})")
        _log_again(info.log, self.seen)
        if not self.first:
            self.reporter.note(f"model: {info.model}")
            self.reporter.note(self.shape_text.format(device=info.device, dtype=info.dtype))
        self.first.setdefault(actor, info)
        self._give_work(actor)

    def _job_done(self, ref) -> None:
        ray = self.ray
        actor, index = self.busy.pop(ref)
        job = self.jobs[index]
        try:
            outcome, records = ray.get(ref)
        except ray.exceptions.RayTaskError as err:  # an exception run_job does not turn into a failed file
            cause = err.cause if isinstance(err.cause, BaseException) else err
            self.record(index, Outcome(job.name, FAILED, f"{type(cause).__name__}: {_first_line(cause)}"))
        except ray.exceptions.RayError as err:  # its worker died RETRIES_PER_FILE + 1 times, or for good
            self.record(index, Outcome(job.name, FAILED, f"its Ray worker died ({_first_line(err)}); "
                                                         f"tried up to {RETRIES_PER_FILE + 1} times"))
            self.starting[actor.info.remote()] = (actor, True)  # back once restarted; dropped if dead for good
            return
        else:
            _log_again(records, self.seen)
            self.record(index, outcome)
        self._give_work(actor)

    def _final_infos(self) -> list[WorkerInfo]:
        ray = self.ray
        try:
            infos = ray.get([actor.info.remote() for actor in self.first], timeout=30)
        except ray.exceptions.RayError as err:  # a worker gone at the very end: no statistics, outputs are safe
            log.warning("could not collect the Ray workers' statistics: %s", _first_line(err))
            return []
        for before, now in zip(self.first.values(), infos):
            if now.pid != before.pid:
                self.reporter.note(f"Ray worker {before.host}:{before.pid} died and was restarted as pid {now.pid}; "
                                   "its file was retried")
        return infos


@contextlib.contextmanager
def _sigterm_survives_ray() -> Iterator[None]:
    """Ray turns an exception raised by a signal handler inside its blocking calls into a plain
    KeyboardInterrupt; note SIGTERM, so that the caller's own exception (exit 143) is raised again."""
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    received: list[int] = []

    def note(signum: int, frame) -> None:
        received.append(signum)
        previous(signum, frame)

    signal.signal(signal.SIGTERM, note)
    try:
        yield
    except KeyboardInterrupt:
        if received:
            previous(signal.SIGTERM, None)  # raises what the caller's handler raises
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_on_cluster(ray, batch: _Batch, settings: WorkerSettings, options: ClusterOptions,
                    runnable: list[int]) -> list[WorkerInfo]:
    _connect(ray, options.address, options.timeout_s)
    try:
        shape, note = _shape(ray, options, settings.device, len(runnable))
        if note:
            batch.reporter.note(note)
        where = "a local instance" if options.address == LOCAL else options.address
        settings = replace(settings, model=settings.model.absolute(), output_folder=settings.output_folder.absolute())
        return batch.run(settings, shape, options, runnable, where)
    finally:
        ray.shutdown()
        # What a killed worker of this host left, if its restarted successor still saw it alive.
        # Best effort: the next run into the folder removes them as well.
        with contextlib.suppress(OSError):
            for name in prepare_output_folder(settings.output_folder):
                batch.reporter.note(f"removed {name}: a temporary file left by a killed worker")


def run_batch_on_ray(jobs: list[Job], settings: WorkerSettings, options: ClusterOptions, reporter: ProgressReporter,
                     summary: Summary) -> list[WorkerInfo]:
    """Run ``jobs`` on Ray workers, appending outcomes to ``summary`` as they finish; the summary ends
    in job order, like the local run's. Returns the workers' final statistics.

    Jobs already failed or skipped at planning are reported without starting Ray. The output
    folder must exist (the caller prepares it). ``ray.init`` leaves process-wide state behind
    (environment variables such as RAY_AUTH_MODE, inherited by child processes; internal state):
    after a local instance, a later run that joins a cluster from the same Python process fails,
    so run each in its own process, as ``lama-inpaint`` does.

    Raises:
        UsageError: Ray is not installed, or the options cannot work on this cluster.
        ClusterError: the cluster cannot be reached, or a worker cannot load the model.
    """
    ray = import_ray()
    batch = _Batch(ray, jobs, reporter, summary)
    summary.total = len(jobs)
    runnable = [i for i, job in enumerate(jobs) if job.problem is None and job.skip is None]
    for index, job in enumerate(jobs):
        if job.problem is not None or job.skip is not None:
            batch.record(index, run_job(job, None, None, settings.output_format))
    infos: list[WorkerInfo] = []
    if runnable:
        with _sigterm_survives_ray():
            infos = _run_on_cluster(ray, batch, settings, options, runnable)
    batch.in_job_order()
    for info in infos:
        reporter.note(f"Ray worker {info.host}:{info.pid}: {info.files} files, peak memory "
                      f"{info.peak_rss_bytes / 2**20:.0f} MiB")
    return infos
