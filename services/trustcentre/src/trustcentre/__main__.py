"""Run the trust centre: `python -m trustcentre` (configuration: TC_* environment variables)."""

from __future__ import annotations

import sys

from servicekit.serve import Service
from trustcentre.app import create_app
from trustcentre.settings import Settings

SERVICE = Service("trustcentre", "TC", 8081)


def main() -> int:
    """Serve on TC_PORT (default 8081), or exit 2 naming the configuration at fault."""
    return SERVICE.serve(Settings.from_environment, create_app)


if __name__ == "__main__":
    sys.exit(main())
