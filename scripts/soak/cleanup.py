#!/usr/bin/env python3
"""Releases whatever a soak check left under DIR (filesystems, loop devices,
processes, FUSE mounts), then removes DIR. run.sh calls it after every check and
from its trap, so a check killed by its time limit or by Ctrl-C leaves nothing.

    scripts/soak/cleanup.py DIR
"""

import sys

import soaklib

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    found = soaklib.cleanup_root(sys.argv[1], remove=True)
    for f in found:
        print(f"released {f}", file=sys.stderr)
