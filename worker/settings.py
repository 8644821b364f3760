"""Worker settings: environment (`CSEXT_*`), an optional YAML config file, CLI flags.

Precedence, highest first: CLI flags (passed as init arguments), environment variables,
the config file (`CSEXT_CONFIG`, default /etc/csext/csext.yaml if it exists), defaults.
Built once by the CLI and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from csext.worker.amqp import names as constants

DEFAULT_CONFIG_FILE = Path("/etc/csext/csext.yaml")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _default_run_dir() -> Path:
    """A tmpfs where there is one: payloads carry credentials and should not touch disk
    (and creating them there is ~20x cheaper)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "csext-runs"
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path("/tmp")
    return base / f"csext-runs-{os.getuid()}"


def config_file_path() -> Path | None:
    """The YAML config file in force, if any."""
    explicit = os.environ.get("CSEXT_CONFIG")
    if explicit:
        return Path(explicit)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CSEXT_", extra="ignore", frozen=True)

    amqp_url: str = "amqp://guest:guest@localhost:5672/"
    """One broker URL, or several separated by commas (the nodes of a RabbitMQ cluster): clients
    connect to the first that answers and fail over to the next (see `amqp_urls`)."""
    registry: Path = Path("extensions")
    registry_remote: str | None = None
    """`URL[@BRANCH]` of a shared registry repository to follow: `registry` is then a symlink
    the worker keeps pointing at a validated checkout (worker/follow.py, `csext fleet`)."""
    cloudstack_exchange: str = constants.CLOUDSTACK_EXCHANGE
    declare_cloudstack_exchange: bool = True
    """Declare CloudStack's exchange (topic, durable) so bindings work before CloudStack runs."""
    connect_timeout: float = Field(default=60.0, ge=0)
    """Seconds the worker keeps retrying its first connection before giving up."""
    concurrency: int = Field(default=16, ge=1, le=4096)
    """Worker-wide limit on extension runs at once (per worker process)."""
    processes: int = Field(default=1, ge=1, le=256)
    shutdown_grace: float = Field(default=30.0, ge=0)
    """Seconds running extensions get to finish after SIGTERM."""
    kill_grace: float = Field(default=2.0, ge=0, le=60)
    """Seconds between SIGTERM and SIGKILL when an extension hits its deadline."""
    output_cap: int = Field(default=1024 * 1024, ge=1024)
    """Bytes kept of each of stdout and stderr per run; the rest is drained and dropped."""
    run_dir: Path = Field(default_factory=_default_run_dir)
    """Private run directories (payload files) live here."""
    run_cgroups: Literal["auto", "off"] = "auto"
    """auto: give each exec run its own cgroup v2 cgroup where the machine allows it (root or
    a delegated subtree), so even descendants that escaped with setsid are killed; off: only
    the process group (see worker/cgroups.py)."""
    coprocess_max_requests: int = Field(default=100_000, ge=0)
    """Answers after which a warm coprocess is replaced; 0: never."""
    coprocess_max_rss_mb: int = Field(default=256, ge=0)
    """Resident memory (MiB) of a coprocess group above which it is replaced; 0: never."""
    extension_path: str = DEFAULT_PATH
    """PATH given to extensions."""
    extension_lang: str = "C.UTF-8"
    delivery_limit: int = Field(default=constants.DEFAULT_DELIVERY_LIMIT, ge=1, le=1000)
    quorum_size: int = Field(default=0, ge=0, le=9)
    """Replicas of each extension's events queue (`x-quorum-initial-group-size`); 0: fit the
    cluster named by `amqp_url` (one URL: RabbitMQ's default; N URLs: N, at most 5, odd when
    above 2). Fixed when a queue is first declared."""
    rpc_margin: float = Field(default=0.5, ge=0, le=60)
    """Seconds kept back from an RPC deadline so the reply arrives before the caller gives up."""
    runs_log_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024 * 1024)
    """Size bound of the csext.runs.log stream (fixed when the stream is first declared)."""
    runs_log_max_age: str = "7D"
    """Age bound of the csext.runs.log stream, RabbitMQ's syntax (`7D`, `12h`)."""
    runs_flush_interval: float = Field(default=0.05, gt=0, le=10)
    """Run records are published in batches at most this many seconds after their run."""
    secrets_file: Path | None = None
    log_level: str = "INFO"
    log_successful_runs: bool = False
    """A log line for every successful run too (failures always get one; `csext runs` has all)."""
    log_json: bool | None = None
    """JSON log lines; default: JSON when stderr is not a terminal."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve /metrics, /healthz and /readyz on this port (worker/health.py); unset: off."""
    metrics_host: str = "0.0.0.0"
    """Address the metrics port listens on."""
    metrics_dir: Path | None = None
    """Set by the supervisor for its children: record metrics into this prometheus_client
    multiprocess directory and let the supervisor serve them."""

    @field_validator("amqp_url")
    @classmethod
    def _amqp_scheme(cls, value: str) -> str:
        for url in split_urls(value):
            if urlsplit(url).scheme not in ("amqp", "amqps"):
                raise ValueError(
                    f"{redact_url(url)!r} must be an amqp:// or amqps:// URL, e.g. "
                    "amqp://guest:guest@localhost:5672/ (several: separate them with commas)"
                )
        if not split_urls(value):
            raise ValueError("is empty; give at least one amqp:// URL")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file_path()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    @property
    def amqp_urls(self) -> list[str]:
        """The broker URLs in the order they are tried."""
        return split_urls(self.amqp_url)

    @property
    def metrics_enabled(self) -> bool:
        return self.metrics_port is not None or self.metrics_dir is not None

    @property
    def safe_amqp_url(self) -> str:
        return redact_url(self.amqp_url)


def split_urls(value: str) -> list[str]:
    """`amqp://a/,amqp://b/` -> both URLs (a comma inside a password must be written %2C)."""
    return [url.strip() for url in value.split(",") if url.strip()]


def redact_url(url: str) -> str:
    """The URL (or comma-separated URLs) with passwords replaced, for logs and errors."""
    if "," in url:
        return ",".join(redact_url(one) for one in split_urls(url))
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and config file, with non-None overrides on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
