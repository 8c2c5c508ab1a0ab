"""Child processes that end with their parent instead of living on alone.

The lab's servers and the router's workers are useless without the
process that started them: an orphaned worker would keep answering from a
state nobody can reload or stop.  Linux delivers a chosen signal to a
child when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere this does
nothing and orphans must be stopped by hand.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

# prctl option number from <linux/prctl.h>.
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """Ask for `signum` when the parent dies; call in the child after fork.

    Exits at once if the parent is already gone, since the request only
    covers a death that happens after it is made.
    """
    if not sys.platform.startswith("linux"):
        return

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent_pid:
        os._exit(1)
