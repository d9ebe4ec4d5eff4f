"""Run the portal: `python -m portal` (configuration: PT_* environment variables)."""

from __future__ import annotations

import sys

from portal.app import create_app
from portal.settings import Settings
from servicekit.serve import Service

SERVICE = Service("portal", "PT", 8083, behind_gateway=True)


def main() -> int:
    """Serve on PT_PORT (default 8083), or exit 2 naming the configuration at fault."""
    return SERVICE.serve(Settings.from_environment, create_app)


if __name__ == "__main__":
    sys.exit(main())
