"""i-PI client: a SINet potential serves forces to an i-PI server over a socket.

i-PI (path-integral and advanced MD) keeps the nuclei and asks a client, over
a UNIX or TCP socket, for the energy, forces and virial of each structure it
sends. :func:`run_client` (and the ``sinet-ipi`` command) is that client for any
ASE calculator, normally a :class:`~sinet_ase.SINetCalculator`::

    i-pi input.xml &                                   # <ffsocket mode="unix"><address>sinet</address>
    sinet-ipi sinet-rmd17-ethanol init.xyz --unix sinet

It speaks i-PI's protocol through ASE's ``SocketClient`` (positions arrive in
bohr and leave in Å; energy, forces and virial go back in hartree units), so the
client needs no i-PI install; the server does (``pip install 'sinet-ase[ipi]'``).

The virial ``W = -V sigma`` is computed only for a structure periodic in all three
directions. For a molecule (or a slab) the client sends a zero virial: a SINet
potential has no stress there, and i-PI's own ASE driver, which asks every
calculator for stress, cannot be told otherwise (its ``has_stress=False`` switch is
broken in ipi 3.3.1). NVE, NVT and path-integral runs do not use the virial; a
constant-pressure run needs a periodic structure.

The atoms (their number, order, elements and periodic directions) come from the
structure given to the client, which must match i-PI's initial structure; the
positions and the cell come from i-PI at every step.
"""

import socket
import time
from typing import Optional

import numpy as np

#: seconds between attempts to reach a server that is not listening yet
_RETRY_SECONDS = 0.2


def unix_socket_path(name: str) -> str:
    """The file of i-PI's UNIX socket ``name`` (i-PI's default prefix ``/tmp/ipi_``)."""
    from ase.calculators.socketio import actualunixsocketname

    return actualunixsocketname(name)


def connect(
    unixsocket: Optional[str] = None, host: str = "localhost", port: Optional[int] = None, wait: float = 60.0, log=None
):
    """ASE ``SocketClient`` connected to an i-PI server, retrying for ``wait`` seconds while
    the server is not listening yet (i-PI and the client are often started together)."""
    from ase.calculators.socketio import SocketClient

    if (unixsocket is None) == (port is None):
        raise ValueError("give either a UNIX socket name (unixsocket=...) or a TCP port (port=...)")
    where = unix_socket_path(unixsocket) if unixsocket is not None else f"{host}:{port}"
    deadline = time.monotonic() + wait
    while True:
        try:
            return SocketClient(host=host, port=port, unixsocket=unixsocket, log=log)
        except (FileNotFoundError, ConnectionRefusedError, socket.timeout) as err:
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"no i-PI server answered at {where} within {wait:g} s "
                    f"({err.strerror or err}); start i-pi first and check "
                    "the address in its <ffsocket>"
                ) from None
            time.sleep(_RETRY_SECONDS)


def _check_atom_count(client, atoms) -> None:
    """Make a structure that does not match i-PI's a clear error, not a numpy broadcast error."""
    receive = client.protocol.recvposdata

    def checked():
        cell, icell, positions = receive()
        if positions.shape != atoms.positions.shape:
            raise ValueError(
                f"i-PI sent {len(positions)} atoms, the client's structure has "
                f"{len(atoms)}; give the client the structure i-PI starts from"
            )
        return cell, icell, positions

    client.protocol.recvposdata = checked


def run_client(
    calc,
    atoms,
    unixsocket: Optional[str] = None,
    host: str = "localhost",
    port: Optional[int] = None,
    wait: float = 60.0,
    log=None,
) -> int:
    """Serve ``calc`` on ``atoms`` to an i-PI server until it says EXIT; return the number
    of structures evaluated.

    Args:
        calc: an ASE calculator (a :class:`~sinet_ase.SINetCalculator`).
        atoms: the structure i-PI runs: elements, order and ``pbc`` are taken from it;
            positions and cell are overwritten by i-PI's at each step.
        unixsocket: i-PI's ``<address>`` in ``mode="unix"`` (the socket file is
            :func:`unix_socket_path`), or
        host, port: i-PI's address and ``<port>`` in ``mode="inet"``.
        wait: seconds to keep trying while the server is not listening yet.
        log: a file object for ASE's protocol log (every message), or ``None``.
    """
    atoms = atoms.copy()
    atoms.calc = calc
    use_stress = bool(np.all(atoms.pbc))  # zero virial otherwise: module docstring
    client = connect(unixsocket=unixsocket, host=host, port=port, wait=wait, log=log)
    _check_atom_count(client, atoms)
    steps = 0
    for _ in client.irun(atoms, use_stress=use_stress):
        steps += 1
    return steps


if __name__ == "__main__":  # python -m sinet_ase.integrations.ipi: the sinet-ipi command
    import sys

    from sinet_ase.cli import ipi_main

    sys.exit(ipi_main())
