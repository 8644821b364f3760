"""`csext` console script entry point.

`csext forward ...` and `csext ipmitool ...` run once per CloudStack action, so they are
dispatched here, before the typer app (and with it pydantic, yaml and aio-pika) is imported:
see worker/forward.py and worker/ipmitool.py.
"""

from __future__ import annotations

import sys


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "forward":
        from csext.bridges.forward import main as forward_main

        sys.exit(forward_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "ipmitool":
        from csext.bridges.ipmitool import main as ipmitool_main

        sys.exit(ipmitool_main(sys.argv[2:]))

    from csext.cli.app import app

    app()


if __name__ == "__main__":
    main()
