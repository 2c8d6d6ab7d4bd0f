"""`python -m node.cli.child PARENT_PID COMMAND...`: an `alliance` command that ends with its parent.

localnet and bench start their nodes through it. On Linux the kernel sends the node SIGTERM when the
process that started it dies, however it dies (SIGKILL included), so no node outlives its tool.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from node.cli.main import main as alliance

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """SIGTERM for this process when its parent ends; exits at once if the parent has already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        sys.exit(f"alliance: error: parent process {parent_pid} has exited")


def main() -> None:
    die_with_parent(int(sys.argv[1]))
    alliance(sys.argv[2:])


if __name__ == "__main__":
    main()
