"""Run the trust centre: `python -m trustcentre` (configuration: TC_* environment variables)."""

from __future__ import annotations

import logging
import os
import sys

import uvicorn

from servicekit.config import ConfigError
from trustcentre.app import create_app
from trustcentre.settings import Settings


def main() -> int:
    """Start serving on TC_PORT (default 8081), or exit 2 naming the configuration at fault."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = Settings.from_environment(os.environ)
    except ConfigError as error:
        print(f"trustcentre: configuration error: {error}", file=sys.stderr)
        return 2
    app = create_app(settings)
    uvicorn.run(app, host=os.environ.get("TC_HOST", "0.0.0.0"), port=int(os.environ.get("TC_PORT", "8081")))  # noqa: S104
    return 0


if __name__ == "__main__":
    sys.exit(main())
