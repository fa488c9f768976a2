"""The scanner: sources list files, rules judge jobs, BackupScanner ties them to the database."""

from service.scanner.scanner import BackupScanner, JobResult, ScanReport, run_scanner

__all__ = ["BackupScanner", "JobResult", "ScanReport", "run_scanner"]
