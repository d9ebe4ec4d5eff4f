"""Run the connector: `python -m connector` (configuration: CN_* environment variables)."""

from __future__ import annotations

import sys

from connector.app import create_app
from connector.settings import Settings
from servicekit.serve import Service

SERVICE = Service("connector", "CN", 8082, behind_gateway=True)


def main() -> int:
    """Serve on CN_PORT (default 8082), or exit 2 naming the configuration at fault."""
    return SERVICE.serve(Settings.from_environment, create_app)


if __name__ == "__main__":
    sys.exit(main())
