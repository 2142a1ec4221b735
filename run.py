#!/usr/bin/env python3
"""Start Keyloom: `python run.py` (or `python run.py --demo` to try it offline)."""
import sys

# Checked before anything else is imported: Keyloom's code needs 3.11 (tomllib, asyncio.timeout, TaskGroup),
# and an older Python would otherwise stop with a traceback about a module it does not have.
if sys.version_info < (3, 11):  # noqa: UP036 - the point: say it in one line on an older Python
    sys.stderr.write("Keyloom needs Python 3.11 or newer; this is Python {}.{}. Install 3.11+ (or use the Docker "
                     "image) and run it again.\n".format(*sys.version_info[:2]))
    sys.exit(2)

from server.main import main  # noqa: E402 - after the version check, on purpose

if __name__ == "__main__":
    sys.exit(main())
