"""The scanner: what judges a job and what lists, judges and records its files.

- rules: pure evaluation, `(job, artifacts, now) -> status, reasons, deadline`. Part of the
  pure core (see service/__init__.py): the job declaration, units, cronsim, no I/O.
- sources/: where files are listed from (local). No database.
- runs: the scan_runs record as a whole (failures in a row, heartbeats, abandoned scans).
- scanner: `BackupScanner` and `run_scanner`, the inventory synced one transaction per job.
- watch: `SourceWatcher`, local sources judged as files land between full scans.

This package's `__init__` imports nothing: importing `service.core.rules` must not load the
database layer. Import what you use from its module (`from service.scanner.scanner import
run_scanner`).
"""
