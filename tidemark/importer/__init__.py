"""IMPORT INTO: bulk-load CSV files into an existing table, as a resumable job.

``plan`` (options, columns, checks → ``ImportDetails``), ``csvread`` (streaming chunks with
resume offsets), ``encode`` (records → rows → index entries), ``job`` (the resumer: ingest at
one timestamp S, checkpoint, validate, publish; revert on failure or cancel) and ``statement``
(the SQL entry point). Importing the package registers the IMPORT job type and its setting.
"""

from __future__ import annotations

from tidemark.importer.job import BATCH_SIZE, PAUSE_AFTER_FIRST_CHUNK, ImportResumer
from tidemark.importer.plan import IMPORT, OFFLINE_REASON, CSVOptions, ImportDetails

__all__ = [
    "BATCH_SIZE",
    "IMPORT",
    "OFFLINE_REASON",
    "PAUSE_AFTER_FIRST_CHUNK",
    "CSVOptions",
    "ImportDetails",
    "ImportResumer",
]
