"""The one typed configuration object: a TOML file, overridden by PACSGW_* environment variables."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway import syntaxes
from gateway.policy import PolicySettings
from storage.records import DuplicatePolicy

DEFAULT_DATA_DIR = Path("pacs-gateway-data")

AETitle = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16, pattern=r"^[ -~]*$")
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DestinationSettings(_Section):
    """A C-MOVE destination: where sub-operations for this Move Destination AE title go."""

    ae_title: AETitle
    host: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)]
    # Transfer syntaxes the destination may be offered; empty means every syntax we can send.
    transfer_syntaxes: tuple[str, ...] = ()

    @field_validator("transfer_syntaxes")
    @classmethod
    def _known_syntaxes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [uid for uid in value if not syntaxes.is_known(uid)]
        if unknown:
            raise ValueError(f"unknown transfer syntax UID(s): {', '.join(unknown)}")
        return value


class DicomSettings(_Section):
    ae_title: AETitle = "PACSGW"
    bind_address: str = "0.0.0.0"
    port: Annotated[int, Field(ge=0, le=65535)] = 11112  # 0 = ephemeral (tests)
    max_associations: PositiveInt = 10
    # Empty means every calling AE title may associate.
    allowed_calling_aets: tuple[AETitle, ...] = ()
    maximum_pdu_size: Annotated[int, Field(ge=0)] = 262_144
    dimse_timeout_seconds: PositiveFloat = 60.0
    network_timeout_seconds: PositiveFloat = 60.0
    acse_timeout_seconds: PositiveFloat = 30.0
    # Seconds a SIGTERM waits for running associations before aborting them.
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 30.0
    destinations: tuple[DestinationSettings, ...] = ()

    @field_validator("destinations")
    @classmethod
    def _unique_destinations(cls, value: tuple[DestinationSettings, ...]) -> tuple[DestinationSettings, ...]:
        titles = [destination.ae_title for destination in value]
        repeated = sorted({title for title in titles if titles.count(title) > 1})
        if repeated:
            raise ValueError(f"AE title(s) listed more than once: {', '.join(repeated)}")
        return value


class DatabaseSettings(_Section):
    url: str = ""  # empty: SQLite under the data directory
    pool_size: PositiveInt = 20

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:///", "postgresql+psycopg://")):
            raise ValueError("must start with sqlite:/// or postgresql+psycopg://")
        return value


class BlobSettings(_Section):
    backend: Literal["filesystem", "database"] = "filesystem"
    path: Path | None = None  # filesystem backend; default: <data_dir>/blobs
    store_name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")] = "primary"


class IngestSettings(_Section):
    duplicates: DuplicatePolicy = DuplicatePolicy.KEEP_REVISIONS
    # Codec worker processes; 0 = one per CPU core.
    workers: Annotated[int, Field(ge=0)] = 0
    # Instances waiting for or inside a worker; beyond it a C-STORE waits (backpressure).
    queue_limit: Annotated[int, Field(ge=0)] = 0  # 0 = twice the workers
    # How long a C-STORE may wait for a worker slot before it is refused with 0xA700.
    queue_timeout_seconds: PositiveFloat = 20.0
    spool_dir: Path | None = None  # default: <data_dir>/spool
    # Orphan blobs (a crash between blob write and index commit) older than this are removed.
    orphan_grace_seconds: PositiveFloat = 3600.0
    sweep_interval_seconds: PositiveFloat = 3600.0


class ArchiveSettings(_Section):
    """Archive recompression: a series quiet this long is re-encoded with its rule's archive codec."""

    enabled: bool = True
    quiet_seconds: Annotated[float, Field(ge=0)] = 3600.0
    # Archive worker processes, separate from the ingest codec workers and run at a lower priority.
    workers: PositiveInt = 1
    niceness: Annotated[int, Field(ge=0, le=19)] = 10  # added to the worker processes' nice value
    poll_seconds: PositiveFloat = 30.0
    # A claimed instance whose worker stops renewing its claim this long is taken up again.
    lease_seconds: PositiveFloat = 300.0
    # An instance whose re-encoding failed this often is marked failed and left as it is.
    max_attempts: PositiveInt = 3
    # A replaced blob is deleted this long after its swap, so a retrieval that located it first
    # still reads it.
    retired_grace_seconds: Annotated[float, Field(ge=0)] = 3600.0


class HttpSettings(_Section):
    enabled: bool = True
    bind_address: str = "0.0.0.0"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PACSGW_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = DEFAULT_DATA_DIR
    dicom: DicomSettings = DicomSettings()
    database: DatabaseSettings = DatabaseSettings()
    blobs: BlobSettings = BlobSettings()
    ingest: IngestSettings = IngestSettings()
    archive: ArchiveSettings = ArchiveSettings()
    http: HttpSettings = HttpSettings()
    logging: LoggingSettings = LoggingSettings()
    policy: PolicySettings = PolicySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init kwargs; the environment beats them.
        return (env_settings, init_settings)

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    @property
    def blob_path(self) -> Path:
        return self.blobs.path or self.data_dir / "blobs"

    @property
    def spool_path(self) -> Path:
        return self.ingest.spool_dir or self.data_dir / "spool"

    @property
    def worker_count(self) -> int:
        return self.ingest.workers or max(1, os.cpu_count() or 1)

    @property
    def queue_limit(self) -> int:
        return self.ingest.queue_limit or 2 * self.worker_count


class ConfigError(Exception):
    """The configuration cannot be used; the message names each offending key."""


def load_settings(path: Path | None = None) -> Settings:
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = f" in {path}" if path else ""
    lines = [f"invalid configuration{where}:"]
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def _mask_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def masked_dump(settings: Settings) -> str:
    """The effective configuration as TOML-like text, with passwords masked."""
    data = json.loads(settings.model_dump_json())
    data["database"]["url"] = _mask_url(settings.database_url)
    data["blobs"]["path"] = str(settings.blob_path)
    data["ingest"]["spool_dir"] = str(settings.spool_path)
    lines: list[str] = []
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    for key, value in top.items():
        lines.append(f"{key} = {json.dumps(value)}")
    for section, body in data.items():
        if isinstance(body, dict):
            lines.append(f"\n[{section}]")
            for key, value in body.items():
                lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"
