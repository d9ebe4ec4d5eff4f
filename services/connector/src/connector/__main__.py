"""Run the connector: `python -m connector` (configuration: CN_* environment variables)."""

from __future__ import annotations

import logging
import os
import sys

import uvicorn

from connector.app import create_app
from connector.settings import Settings
from servicekit.config import ConfigError


def main() -> int:
    """Start serving on 0.0.0.0:8082 (CN_PORT overrides), or exit 2 naming the configuration at fault."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = Settings.from_environment(os.environ)
    except ConfigError as error:
        print(f"connector: configuration error: {error}", file=sys.stderr)
        return 2
    app = create_app(settings)
    uvicorn.run(
        app,
        host=os.environ.get("CN_HOST", "0.0.0.0"),  # noqa: S104 -- inside its container, behind the gateway
        port=int(os.environ.get("CN_PORT", "8082")),
        # Only the gateway reaches it; its X-Forwarded-Proto makes the URLs in answers https ones.
        forwarded_allow_ips="*",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
