"""The scanner: what lists a job's source, judges the job and records what it found. The rules
it judges by are the pure core's (service.core.rules).

- sources/: where backups are listed from (local, s3, sftp, restic, borg): one adapter each
  behind one port, and the lister that lists a mix of them. No database.
- pipeline: list sources ahead while the batches ready are judged and written.
- state (data), judge (pure: observation -> new state), inventory (pure: known vs listed).
- writer: the scan's SQL (claims, job_checks, outbox, artifacts).
- scanner: `BackupScanner` and `run_scanner`, the scan's facade.
- watch: `SourceWatcher`, local sources judged as files land between full scans.

May import the pure core, the database layer, the store (pings, silences, scans), notify's pure
rules and outbox, and the settings; never the runtime, the HTTP surfaces or the CLI. This
package's `__init__` imports nothing: import what you use from its module (`from
service.scanner.scanner import run_scanner`).
"""
