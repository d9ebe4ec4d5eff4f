"""Read a stack's `hubnode:*` config from Pulumi's runtime as the plain values `infra.spec` takes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pulumi.runtime import config as runtime_config

from infra.spec import NAMESPACE, SECRET_KEYS
from infra.stackfile import read_named_files


def stack_config() -> dict[str, Any]:
    """Every non-secret `hubnode:*` key the engine passed, structured values decoded.

    All keys are listed (not only known ones) so that a misspelt key is reported, not ignored.
    Secrets are left to `pulumi.Config.require_secret`, so they stay wrapped as secrets. A file a
    key names (`infra.stackfile.FILE_KEYS`) is read from the project folder, where Pulumi runs the program.
    """
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    secret = {f"{NAMESPACE}:{key}" for key in SECRET_KEYS}
    config = {
        key: _decode(runtime_config.get_config(key))
        for key in sorted(keys)
        if key.startswith(f"{NAMESPACE}:") and key not in secret
    }
    return read_named_files(config, Path.cwd())


def _decode(raw: Any) -> Any:  # noqa: ANN401 -- config values are arbitrary JSON
    """Pulumi hands structured config (lists, maps) over as JSON text; plain strings stay strings."""
    if not isinstance(raw, str):
        return raw
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, list | dict | int | bool) else raw
