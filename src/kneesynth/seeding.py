"""Seeds derived from one base seed and names, stable across runs and machines."""

from __future__ import annotations

import hashlib


def derive_seed(base_seed: int, *names: object) -> int:
    """A 63-bit seed from ``base_seed`` and any names (model, condition, step ...).

    Uses SHA-256 rather than Python's ``hash`` (salted per process), so the same names give the
    same seed in every process and on every machine.
    """
    text = "/".join([str(int(base_seed)), *(str(n) for n in names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)
