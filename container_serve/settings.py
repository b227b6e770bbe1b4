"""Everything the serving container reads from its environment, in one place.

SageMaker configures a serving container only through environment variables. The ``SAGEMAKER_*`` names
below are the platform's (and the sagemaker-inference toolkit's); the ``BYOC_*`` names are this
project's own knobs, all optional.

=================================  =========================================================  ===========
variable                           meaning                                                    default
=================================  =========================================================  ===========
SAGEMAKER_BIND_TO_PORT             port the gate serves /ping, /invocations, /models ... on   8080
BYOC_BIND_ADDRESS                  interface to listen on (local runs use 127.0.0.1)          0.0.0.0
SAGEMAKER_MULTI_MODEL              ``true``: multi-model endpoint (models loaded via /models)  false
SAGEMAKER_BASE_DIR                 the ``/opt/ml`` tree (toolkit variable)                    /opt/ml
BYOC_MODEL_ROOT                    model root, overriding ``<base>/model`` (single model)      (derived)
                                   or ``<base>/models`` (multi-model)
SAGEMAKER_MAX_PAYLOAD_IN_MB        largest request body accepted (413 above it)               6
SAGEMAKER_BATCH                    ``true`` inside a batch transform job                      false
SAGEMAKER_MODEL_SERVER_WORKERS     python workers per model                                   see below
SAGEMAKER_MODEL_SERVER_TIMEOUT     seconds a worker may take for one request                  60 (600 batch)
SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT  response type when the client sends no/any Accept        application/json
SAGEMAKER_MODEL_SERVER_VMARGS      JVM arguments for the MMS frontend; the default sizes its  see below
                                   heap from the container's memory limit
BYOC_GATE_IDLE_TIMEOUT_S           a connection with no request started is closed after this  60
BYOC_GATE_HEAD_TIMEOUT_S           a request head not complete this long after its first      10
                                   byte: 408, connection closed
BYOC_GATE_BODY_TIMEOUT_S           a request body not complete (or a response not taken) in   60
                                   this long: 408, connection closed
BYOC_GATE_MAX_CONNECTIONS          open client connections; at the cap the one waiting        1000
                                   longest on its client is closed (never below what the
                                   open-files limit allows)
BYOC_UPSTREAM_TIMEOUT_S            longest wait for MMS's answer to an invocation: JSON 504    timeout + 5
                                   (SageMaker gives up on an invocation after 60 s)
BYOC_LOAD_TIMEOUT_S                longest wait for a model load (POST /models): JSON 504      600
BYOC_TORCH_THREADS                 torch intra-op threads per worker, at least                1
BYOC_MAX_TORCH_THREADS             ... and at most: a forward pass takes the cores no other   cores
                                   worker is computing on (container_serve.core_slots)
BYOC_OMP_WAIT_POLICY               OpenMP's OMP_WAIT_POLICY in the workers: ``PASSIVE``       PASSIVE
                                   threads sleep at a barrier instead of spinning (with
                                   another process on a core, spinning cost 5-15x)
BYOC_MODEL_FORM                    ``auto``, ``bf16`` or ``fp32``: the form the network is    auto
                                   served in (container_serve.model_form); ``auto`` = bf16
                                   where the CPU has native bf16, else fp32
BYOC_FORK_SERVER                   ``true``: every MMS worker is forked from one process that  true
                                   imported torch, torchvision and the handler once
                                   (container_serve.fork_server), so those pages are shared
                                   between models instead of paid per model; ``false`` (or a
                                   fork server that cannot start, logged): each worker a
                                   fresh python, as MMS starts them
BYOC_JOB_QUEUE_SIZE                requests queued per model before 503                       100
BYOC_MAX_IMAGE_PIXELS              largest decoded image (width*height) before 413            40000000
BYOC_MAX_IMAGES_PER_REQUEST        images in one request body                                 64
BYOC_BATCH_STRATEGY                BatchStrategy advertised on /execution-parameters          SINGLE_RECORD
BYOC_BATCH_SIZE                    requests MMS hands a worker at once (server-side batching  1
                                   of models loaded with POST /models)
BYOC_MAX_BATCH_DELAY_MS            how long MMS waits to fill such a batch                    100
BYOC_CGROUP_DIR                    cgroup filesystem the load-time memory check reads         /sys/fs/cgroup
BYOC_MMS_PLUGINS_DIR               folder with the prebuilt /execution-parameters plugin jar  (none)
                                   (the image sets it; else built once into the cache)
XDG_CACHE_HOME                     that cache: ``<it>/byoc/mms-plugins/``                     ~/.cache
BYOC_LOAD_REPORTS_DIR              internal, set by serve.py for its workers: where a worker  (run dir)
                                   reports how a model load ended (read by the gate)
BYOC_CORE_SLOTS_DIR                internal, set by serve.py for its workers: the per-core    (run dir)
                                   lock files of container_serve.core_slots
BYOC_EXECUTION_PARAMETERS          internal, set by serve.py for the Java plugin              (computed)
=================================  =========================================================  ===========

The port is served by the request gate (:mod:`container_serve.gate`); multi-model-server itself listens
only on Unix sockets in a private folder.

Workers: one per model on a multi-model endpoint (many models share the cores), one per core on a
single-model endpoint. Concurrency comes from processes; intra-op threads only use cores that no other
worker is computing on, so concurrent requests never ask for (much) more threads than there are cores,
and a lone request still gets every core (``bench/RESULTS.md`` section 3: 2.0x the requests/s at
concurrency 16 and 0.6x the p50 at concurrency 1 of one fixed thread per worker; OpenMP threads must
then wait passively, ``BYOC_OMP_WAIT_POLICY``, or a busy neighbour makes them 5-15x slower). Workers
are forked from the fork server by default (``BYOC_FORK_SERVER``): section 3b, a multi-model endpoint
held 3.96x the ResNet50s per GiB (PSS) and loaded each in 0.14x the time of a fresh python per worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from byoc_common import sagemaker_paths
from byoc_common.booleans import parse_bool
from container_serve import content_types as ct

DEFAULT_PORT = 8080
MAX_PORT = 65535  # the gate listens on the port; multi-model-server only on Unix sockets
DEFAULT_MAX_PAYLOAD_MB = 6
DEFAULT_TIMEOUT_S = 60
DEFAULT_BATCH_TIMEOUT_S = 600
DEFAULT_JOB_QUEUE_SIZE = 100
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
DEFAULT_MAX_IMAGES_PER_REQUEST = 64
# The container spelling AWS documents for GET /execution-parameters and SAGEMAKER_BATCH_STRATEGY ("Use
# your own inference code with batch transform"), what SageMaker reads. The SageMaker Python SDK's local
# mode (sagemaker/local/data.py get_batch_strategy_instance) accepts only the API spelling SingleRecord /
# MultiRecord from it, so local-mode users pass strategy= (README, "From the SageMaker Python SDK").
BATCH_STRATEGIES = ("SINGLE_RECORD", "MULTI_RECORD")
# The sagemaker-inference toolkit (1.10.1, environment.py DEFAULT_VMARGS) passes -XX:-UseContainerSupport,
# which sizes the heap from the host's memory: in a 4 GiB container two 6 MB form bodies parsed by Netty
# grew Java past the limit and the kernel killed it. With container support the JVM reads the cgroup limit;
# a quarter of it (Java's own default share, made explicit) leaves the rest to the python workers.
# SAGEMAKER_MODEL_SERVER_VMARGS still replaces all of it, as with the toolkit.
DEFAULT_JVM_ARGS = "-XX:+UseContainerSupport -XX:MaxRAMPercentage=25.0"
DEFAULT_IDLE_TIMEOUT_S = 60
DEFAULT_HEAD_TIMEOUT_S = 10
DEFAULT_BODY_TIMEOUT_S = 60
DEFAULT_MAX_CONNECTIONS = 1000
UPSTREAM_MARGIN_S = 5   # past the worker's own timeout (SAGEMAKER_MODEL_SERVER_TIMEOUT), MMS has failed
DEFAULT_LOAD_TIMEOUT_S = 600
DEFAULT_MAX_BATCH_DELAY_MS = 100  # MMS's own default for max_batch_delay
DEFAULT_CGROUP_DIR = "/sys/fs/cgroup"
LOAD_REPORTS_ENV = "BYOC_LOAD_REPORTS_DIR"
CORE_SLOTS_ENV = "BYOC_CORE_SLOTS_DIR"
MODEL_FORM_AUTO, MODEL_FORM_BF16, MODEL_FORM_FP32 = "auto", "bf16", "fp32"  # container_serve.model_form
MODEL_FORMS = (MODEL_FORM_AUTO, MODEL_FORM_BF16, MODEL_FORM_FP32)
DEFAULT_MODEL_FORM = MODEL_FORM_AUTO
OMP_WAIT_POLICIES = ("PASSIVE", "ACTIVE")
DEFAULT_OMP_WAIT_POLICY = "PASSIVE"
DEFAULT_FORK_SERVER = True


class SettingsError(ValueError):
    """An environment variable holds a value the server cannot use."""


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = env.get(name, "")
    if value.strip() == "":
        return default
    try:
        return parse_bool(value)
    except ValueError as e:
        raise SettingsError(f"{name}: {e}") from None


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError as e:
        raise SettingsError(f"{name}={raw!r}: expected an integer") from e
    if value < minimum:
        raise SettingsError(f"{name}={value}: must be >= {minimum}")
    return value


def cpu_count(cgroup_dir: Path = Path(DEFAULT_CGROUP_DIR)) -> int:
    """Cores this container may use: its CPU affinity, capped by a cgroup CPU quota (``docker run --cpus``,
    cgroup v2 ``cpu.max``), which the affinity does not show: workers and threads sized from the affinity
    alone would be throttled by the quota (issue 27)."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        cores = max(1, os.cpu_count() or 1)
    try:
        quota, period = (cgroup_dir / "cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return cores


@dataclass(frozen=True)
class ServeSettings:
    port: int
    bind_address: str
    multi_model: bool
    base_dir: Path
    model_root: Path
    max_payload_mb: int
    batch: bool
    workers_per_model: int
    torch_threads: int
    response_timeout_s: int
    job_queue_size: int
    default_accept: str
    max_image_pixels: int
    max_images_per_request: int
    batch_strategy: str
    jvm_args: str
    batch_size: int = 1
    max_batch_delay_ms: int = DEFAULT_MAX_BATCH_DELAY_MS
    cgroup_dir: Path = Path(DEFAULT_CGROUP_DIR)
    load_reports_dir: Path | None = None
    max_torch_threads: int = 1
    model_form: str = DEFAULT_MODEL_FORM
    core_slots_dir: Path | None = None
    omp_wait_policy: str = DEFAULT_OMP_WAIT_POLICY
    fork_server: bool = DEFAULT_FORK_SERVER
    idle_timeout_s: int = DEFAULT_IDLE_TIMEOUT_S
    head_timeout_s: int = DEFAULT_HEAD_TIMEOUT_S
    body_timeout_s: int = DEFAULT_BODY_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    upstream_timeout_s: int = DEFAULT_TIMEOUT_S + UPSTREAM_MARGIN_S
    load_timeout_s: int = DEFAULT_LOAD_TIMEOUT_S

    @property
    def max_payload_bytes(self) -> int:
        return self.max_payload_mb * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServeSettings:
        env = os.environ if env is None else env
        multi_model = _bool(env, "SAGEMAKER_MULTI_MODEL")
        batch = _bool(env, "SAGEMAKER_BATCH")
        base_dir = sagemaker_paths.base_dir(env)
        root = env.get("BYOC_MODEL_ROOT") or str(base_dir / ("models" if multi_model else "model"))
        cores = cpu_count(Path(env.get("BYOC_CGROUP_DIR") or DEFAULT_CGROUP_DIR))
        workers = _int(env, "SAGEMAKER_MODEL_SERVER_WORKERS", 1 if multi_model else cores)
        strategy = env.get("BYOC_BATCH_STRATEGY", "SINGLE_RECORD").strip().upper()
        if strategy not in BATCH_STRATEGIES:
            raise SettingsError(f"BYOC_BATCH_STRATEGY={strategy!r}: expected one of {BATCH_STRATEGIES}")
        port = _int(env, "SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT)
        form = (env.get("BYOC_MODEL_FORM") or DEFAULT_MODEL_FORM).strip().lower()
        if form not in MODEL_FORMS:
            raise SettingsError(f"BYOC_MODEL_FORM={form!r}: expected one of {MODEL_FORMS}")
        threads = _int(env, "BYOC_TORCH_THREADS", 1)
        wait_policy = (env.get("BYOC_OMP_WAIT_POLICY") or DEFAULT_OMP_WAIT_POLICY).strip().upper()
        if wait_policy not in OMP_WAIT_POLICIES:
            raise SettingsError(f"BYOC_OMP_WAIT_POLICY={wait_policy!r}: expected one of {OMP_WAIT_POLICIES}")
        response_timeout = _int(env, "SAGEMAKER_MODEL_SERVER_TIMEOUT",
                                DEFAULT_BATCH_TIMEOUT_S if batch else DEFAULT_TIMEOUT_S)
        if port > MAX_PORT:
            raise SettingsError(f"SAGEMAKER_BIND_TO_PORT={port}: not a TCP port (1-{MAX_PORT})")
        return cls(
            port=port,
            bind_address=env.get("BYOC_BIND_ADDRESS") or "0.0.0.0",
            multi_model=multi_model,
            base_dir=base_dir,
            model_root=Path(os.path.abspath(root)),
            max_payload_mb=_int(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", DEFAULT_MAX_PAYLOAD_MB),
            batch=batch,
            workers_per_model=workers,
            torch_threads=threads,
            response_timeout_s=response_timeout,
            job_queue_size=_int(env, "BYOC_JOB_QUEUE_SIZE", DEFAULT_JOB_QUEUE_SIZE),
            default_accept=env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or ct.JSON,
            max_image_pixels=_int(env, "BYOC_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS),
            max_images_per_request=_int(env, "BYOC_MAX_IMAGES_PER_REQUEST", DEFAULT_MAX_IMAGES_PER_REQUEST),
            batch_strategy=strategy,
            jvm_args=env.get("SAGEMAKER_MODEL_SERVER_VMARGS") or DEFAULT_JVM_ARGS,
            batch_size=_int(env, "BYOC_BATCH_SIZE", 1),
            max_batch_delay_ms=_int(env, "BYOC_MAX_BATCH_DELAY_MS", DEFAULT_MAX_BATCH_DELAY_MS),
            cgroup_dir=Path(env.get("BYOC_CGROUP_DIR") or DEFAULT_CGROUP_DIR),
            load_reports_dir=Path(env[LOAD_REPORTS_ENV]) if env.get(LOAD_REPORTS_ENV) else None,
            max_torch_threads=max(threads, _int(env, "BYOC_MAX_TORCH_THREADS", cores)),
            model_form=form,
            core_slots_dir=Path(env[CORE_SLOTS_ENV]) if env.get(CORE_SLOTS_ENV) else None,
            omp_wait_policy=wait_policy,
            fork_server=_bool(env, "BYOC_FORK_SERVER", DEFAULT_FORK_SERVER),
            idle_timeout_s=_int(env, "BYOC_GATE_IDLE_TIMEOUT_S", DEFAULT_IDLE_TIMEOUT_S),
            head_timeout_s=_int(env, "BYOC_GATE_HEAD_TIMEOUT_S", DEFAULT_HEAD_TIMEOUT_S),
            body_timeout_s=_int(env, "BYOC_GATE_BODY_TIMEOUT_S", DEFAULT_BODY_TIMEOUT_S),
            max_connections=_int(env, "BYOC_GATE_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS),
            upstream_timeout_s=_int(env, "BYOC_UPSTREAM_TIMEOUT_S", response_timeout + UPSTREAM_MARGIN_S),
            load_timeout_s=_int(env, "BYOC_LOAD_TIMEOUT_S", DEFAULT_LOAD_TIMEOUT_S),
        )

    def execution_parameters(self) -> dict:
        """What ``GET /execution-parameters`` answers (SageMaker batch transform reads it to size its
        requests): one concurrent transform per worker, our payload limit, our batch strategy."""
        return {
            "MaxConcurrentTransforms": self.workers_per_model,
            "BatchStrategy": self.batch_strategy,
            "MaxPayloadInMB": self.max_payload_mb,
        }
