#!/usr/bin/env python3
"""Start Keyloom: `python run.py` (or `python run.py --demo` to try it offline)."""
import sys

from server.main import main

if __name__ == "__main__":
    sys.exit(main())
