"""Reading a service's configuration: environment variables naming files, secrets only in files.

Any mistake stops the service at start-up with a message naming the variable or file and what is
wrong, rather than a half-configured service.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote


class ConfigError(Exception):
    """The configuration cannot be used; the message names the variable or file at fault."""


def read_file(variable: str, environ: Mapping[str, str]) -> str:
    """The text of the file that `variable` names."""
    path = environ.get(variable)
    if not path:
        raise ConfigError(f"{variable} is not set: it must name a file")
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{variable}={path}: cannot read it ({exc.strerror})") from None


def read_json(variable: str, environ: Mapping[str, str]) -> Any:  # noqa: ANN401 -- any JSON document
    """The decoded JSON file that `variable` names."""
    try:
        return json.loads(read_file(variable, environ))
    except ValueError as exc:
        raise ConfigError(f"{variable}={environ[variable]}: not valid JSON ({exc})") from None


def with_password(url: str, password: str, url_variable: str) -> str:
    """`url` (from `url_variable`) with its user's password set, URL-quoted."""
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        raise ConfigError(f"{url_variable} must name a user (postgresql+psycopg://user@host/db) to use a password file")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:{quote(password, safe='')}@{host}"
