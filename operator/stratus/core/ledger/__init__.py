"""The usage ledger: canonical, signed, hash-chained usage records; verification; export.

Each closed interval of a project (:class:`stratus.core.metering.IntervalUsage`) becomes
one record. Records are canonical JSON, signed with Ed25519 and chained per project by
the SHA-256 of the previous record. They are written once to an append-only store
(:mod:`stratus.drivers.ledger_store`) and never rewritten. Anyone holding the published
public keys can verify a chain with :func:`verify`.

The format, one module each (their docstrings hold the design decisions):

- :mod:`.canonical`: canonical JSON, the exact bytes that are signed, hashed and stored;
- :mod:`.records`: the record layout (version 1), record ids, parsing and checks;
- :mod:`.signing`: Ed25519 signer, public keys and key ids, the verifier's keyring;
- :mod:`.chain`: one hash chain per project, its head, sealing an interval onto it;
- :mod:`.verification`: checking chains and naming the first bad record.

Built on the format: :mod:`.book` (the :class:`Ledger` that appends to a record store and
reads back, and :func:`close_due`) and :mod:`.export` (rows, totals, CSV and JSON for
billing; prices are :class:`stratus.core.metering.PriceList`). Every public name is
re-exported here, so ``from stratus.core.ledger import ...`` keeps working.
"""

from __future__ import annotations

from .book import CloseReport, Ledger, RecordStore, close_due
from .canonical import CanonicalError, canonical_json, parse_canonical
from .chain import ChainError, ChainHead, seal
from .export import export_csv, export_json, export_rows, select, usage_totals
from .records import GENESIS, Problem, Record, RecordConflict, RecordError, parse_record_id, record_id
from .signing import Keyring, PublicKey, Signer
from .verification import Finding, Verification, verify

__all__ = [
    "GENESIS",
    "CanonicalError",
    "ChainError",
    "ChainHead",
    "CloseReport",
    "Finding",
    "Keyring",
    "Ledger",
    "Problem",
    "PublicKey",
    "Record",
    "RecordConflict",
    "RecordError",
    "RecordStore",
    "Signer",
    "Verification",
    "canonical_json",
    "close_due",
    "export_csv",
    "export_json",
    "export_rows",
    "parse_canonical",
    "parse_record_id",
    "record_id",
    "seal",
    "select",
    "usage_totals",
    "verify",
]
