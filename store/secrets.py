"""Secret values, kept out of the manifest and out of Git.

A manifest only names its secrets (`spec.secrets: [API_TOKEN]`); their values live in one YAML
file mapping extension name to `NAME: value`:

    hello:
      API_TOKEN: s3cr3t

The file must be a regular file owned by the user csext runs as, with no permissions for group
or others (mode 0600), and must not sit inside the registry (the registry is a Git repository
that gets pushed and shared). Anything else is refused with a clear error, never read.
Default location: /etc/csext/secrets.yaml when running as root, else
~/.config/csext/secrets.yaml; `CSEXT_SECRETS_FILE` (Settings.secrets_file) overrides it.
No function here returns a value to print: `secret_names` gives names only.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import yaml

from csext.schemas.errors import ConfigError
from csext.schemas.manifest import SECRET_NAME_PATTERN, is_valid_name

_SECRET_RE = re.compile(SECRET_NAME_PATTERN)

SYSTEM_SECRETS_FILE = Path("/etc/csext/secrets.yaml")

Secrets = dict[str, dict[str, str]]


def default_secrets_file() -> Path:
    if os.geteuid() == 0:
        return SYSTEM_SECRETS_FILE
    return Path.home() / ".config" / "csext" / "secrets.yaml"


def secrets_path(configured: Path | None, registry: Path) -> Path:
    """The secrets file in force, refused when it lies inside the registry."""
    path = (configured or default_secrets_file()).expanduser()
    if path.resolve().is_relative_to(registry.resolve()):
        raise ConfigError(
            f"secrets file {path} is inside the registry {registry}, which is a Git repository "
            "that gets shared: set CSEXT_SECRETS_FILE to a path outside it"
        )
    return path


def check_file(path: Path) -> None:
    """Refuse a secrets file others could read or write, or that is not ours."""
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"secrets file {path} is not a regular file (a symlink?); refusing it")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"secrets file {path} is owned by uid {info.st_uid}, not by the user csext runs as "
            f"(uid {os.geteuid()}): chown it to that user"
        )
    if info.st_mode & 0o077:
        raise ConfigError(
            f"secrets file {path} has mode {stat.S_IMODE(info.st_mode):04o}; "
            f"it must be readable by its owner only: chmod 600 {path}"
        )


def load_secrets(path: Path | None) -> Secrets:
    """{extension: {NAME: value}} from the secrets file; {} when there is no file."""
    if path is None or not os.path.lexists(path):
        return {}
    check_file(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"secrets file {path} cannot be read as YAML: {exc}") from exc
    return _validate(path, raw)


def _validate(path: Path, raw: object) -> Secrets:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"secrets file {path}: must map extension names to NAME: value pairs")
    result: Secrets = {}
    for extension, values in raw.items():
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int | float) for k, v in values.items()
        ):
            raise ConfigError(
                f"secrets file {path}: {extension!r} must map secret names to string values"
            )
        result[str(extension)] = {k: str(v) for k, v in values.items()}
    return result


def set_secret(path: Path, extension: str, name: str, value: str) -> None:
    """Store one value, creating the file (mode 0600, parent 0700) if needed."""
    if not is_valid_name(extension):
        raise ConfigError(f"{extension!r} is not a valid extension name")
    check_secret_name(name)
    if not value:
        raise ConfigError(f"empty value for secret {name}: give a value on stdin")
    secrets = load_secrets(path)
    secrets.setdefault(extension, {})[name] = value
    write_secrets(path, secrets)


def unset_secret(path: Path, extension: str, name: str) -> bool:
    """Forget one value; False when it was not set."""
    secrets = load_secrets(path)
    if name not in secrets.get(extension, {}):
        return False
    del secrets[extension][name]
    if not secrets[extension]:
        del secrets[extension]
    write_secrets(path, secrets)
    return True


def check_secret_name(name: str) -> None:
    if not _SECRET_RE.match(name):
        raise ConfigError(
            f"{name!r} is not a valid secret name: use upper case letters, digits and _, "
            "e.g. API_TOKEN (it becomes an environment variable)"
        )


def write_secrets(path: Path, secrets: Secrets) -> None:
    """Atomic replace; the new file is created 0600 so it is never readable by others."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yaml.safe_dump(secrets, handle, default_flow_style=False, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def secret_names(path: Path, extension: str) -> list[str]:
    """Names of the values set for `extension` (never the values)."""
    return sorted(load_secrets(path).get(extension, {}))
