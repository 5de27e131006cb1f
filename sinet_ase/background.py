"""Low-priority background work that waits for the run that started it.

Shared by the background compilation of a network (:mod:`sinet_ase.background_compile`) and
the background build of the fused kernels (:mod:`sinet_ase.ops.fused`): each starts a
separate process at ``nice`` 19 that waits for the starting process to end, because on a
2-core machine work beside a run, even at the lowest priority, slows the run
(``docs/speed.md``). ``SINET_ASE_BACKGROUND_COMPILE=off`` switches both off.
"""

import os
import time

from .files import process_exists

#: environment variable; ``off`` (or ``0``, ``false``, ``no``) starts no background process
BACKGROUND_SWITCH = "SINET_ASE_BACKGROUND_COMPILE"
#: the background process starts its work when the run that started it ends, or after this
#: long (a run of sinet-md short enough to run eagerly takes a minute or two)
MAX_WAIT_FOR_PARENT_S = 10 * 60
#: how often the background process looks whether the run has ended
PARENT_POLL_S = 0.2


def switched_off() -> bool:
    """Whether ``SINET_ASE_BACKGROUND_COMPILE`` switches background processes off."""
    return os.environ.get(BACKGROUND_SWITCH, "").strip().lower() in ("off", "0", "false", "no")


def lower_priority():
    """``preexec_fn`` of the background process: the lowest CPU priority."""
    os.nice(19)


def wait_for_exit(pid: int, timeout: float = MAX_WAIT_FOR_PARENT_S) -> bool:
    """Sleep until process ``pid`` has ended, at most ``timeout`` seconds; whether it ended."""
    deadline = time.monotonic() + timeout
    while process_exists(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(PARENT_POLL_S)
    return True
