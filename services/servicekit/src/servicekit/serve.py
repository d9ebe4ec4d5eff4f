"""Start one of our ASGI services the same way everywhere: settings from the environment, then uvicorn."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import uvicorn
from starlette.types import ASGIApp

from servicekit.config import ConfigError

SettingsT = TypeVar("SettingsT")


@dataclass(frozen=True)
class Service:
    """How a service is started: its name in messages, its variables' prefix, its default port.

    A service `behind_gateway` is reached only through the node's gateway, so the forwarded headers
    it sets are trusted (answers carry the gateway's https URLs); any other service trusts none.
    """

    name: str
    env_prefix: str
    default_port: int
    behind_gateway: bool = False

    def serve(self, load: Callable[[Mapping[str, str]], SettingsT], create_app: Callable[[SettingsT], ASGIApp]) -> int:
        """Serve on `<prefix>_HOST`:`<prefix>_PORT`, or exit 2 naming the configuration at fault."""
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        try:
            settings = load(os.environ)
        except ConfigError as error:
            print(f"{self.name}: configuration error: {error}", file=sys.stderr)
            return 2
        uvicorn.run(
            create_app(settings),
            host=os.environ.get(f"{self.env_prefix}_HOST", "0.0.0.0"),  # noqa: S104 -- inside its container
            port=int(os.environ.get(f"{self.env_prefix}_PORT", str(self.default_port))),
            forwarded_allow_ips="*" if self.behind_gateway else None,
        )
        return 0
