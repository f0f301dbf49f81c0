# SPDX-License-Identifier: Apache-2.0
"""
Fingerprints of what a record depends on besides its key: the code that trained it (the
``pyro_probmix`` package's ``.py`` files) and the data files it read (their SHA-256). A sweep
reuses a record only when its fingerprint is the current one
(:meth:`~pyro_probmix.experiments.records.RecordStore.status`).
"""
import functools
import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["code_fingerprint", "file_sha256", "fingerprint", "fingerprint_difference"]


@functools.lru_cache(maxsize=None)
def code_fingerprint():
    """16 hex digits of the SHA-256 of the ``pyro_probmix`` package's ``.py`` files (their paths
    and bytes): the same from a checkout or an installed wheel, different after any edit.

    >>> len(code_fingerprint()), code_fingerprint() == code_fingerprint()
    (16, True)
    """
    import pyro_probmix

    package = Path(pyro_probmix.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


_FILE_HASHES = {}


def file_sha256(path):
    """The SHA-256 (hex) of a file's bytes, cached while its size and mtime are unchanged.

    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = Path(tmp.name, "a.txt")
    >>> _ = path.write_bytes(b"abc")
    >>> file_sha256(path)[:12]
    'ba7816bf8f01'
    >>> tmp.cleanup()
    """
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return _FILE_HASHES[key]


def fingerprint(data_files=(), root=None):
    """``{"code": code_fingerprint(), "data": {name: sha256}}`` of the data files a run reads
    (named relative to ``root`` when given).

    >>> fingerprint()["data"], fingerprint()["code"] == code_fingerprint()
    ({}, True)
    """
    data = {}
    for path in data_files:
        name = Path(path).relative_to(root).as_posix() if root is not None else Path(path).name
        data[name] = file_sha256(path)
    return {"code": code_fingerprint(), "data": data}


def fingerprint_difference(recorded, expected):
    """What differs between two fingerprints, in words (``""`` when nothing does).

    >>> fingerprint_difference({"code": "a", "data": {"x.txt": "1"}}, {"code": "b", "data": {"x.txt": "2"}})
    'code a -> b; data file x.txt changed'
    >>> fingerprint_difference(None, {"code": "b", "data": {}})
    'no fingerprint (recorded by older code)'
    """
    if not isinstance(recorded, dict):
        return "no fingerprint (recorded by older code)"
    parts = []
    if recorded.get("code") != expected["code"]:
        parts.append(f"code {recorded.get('code')} -> {expected['code']}")
    old = recorded.get("data") or {}
    for name in sorted(set(old) | set(expected["data"])):
        if old.get(name) != expected["data"].get(name):
            what = "changed" if name in old and name in expected["data"] else ("new" if name not in old else "gone")
            parts.append(f"data file {name} {what}")
    return "; ".join(parts)
