"""Exceptions raised by sinet-ase for bad input.

Each one says what is wrong and how to fix it; they subclass the built-in
exception a user would expect (``ValueError`` for bad data, ``OSError`` never:
a bad model file is a :class:`ModelFileError`).
"""


class SINetInputError(ValueError):
    """Structure that the model cannot evaluate (empty, NaN positions, overlapping atoms)."""


class UnknownElementError(SINetInputError):
    """An element that the model was not trained on."""

    def __init__(self, unknown, known):
        self.unknown = sorted(set(unknown))
        self.known = list(known)
        super().__init__(
            f"element(s) {', '.join(self.unknown)} unknown to this model; it knows "
            f"{', '.join(self.known)}. Use a model trained on these elements, or "
            "build a new one with SINet(elements=[...]) that lists them."
        )


class OutOfDomainError(SINetInputError):
    """A structure far outside the potential's training data, where its energy is arbitrary
    (or outside it, with ``out_of_domain="raise"``; :mod:`sinet_ase.domain`)."""


class InsufficientMemoryError(SINetInputError, MemoryError):
    """A structure whose energy and forces would need more memory than is available (raised
    before the call, with the estimate; :func:`sinet_ase.memory.check_memory`)."""


class ModelFileError(ValueError):
    """A file that is not a readable sinet-ase model (truncated, foreign, newer format)."""


class ConfigError(ValueError):
    """A training configuration that cannot be run (unknown key, missing data)."""
