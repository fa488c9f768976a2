"""Proving that a backup artifact can be read back: archive and checksum verification.

- budget: `Budget`, the service-wide byte budget (a thread-safe token bucket) that every
  verification reads under, so that verification never starves scans, pings or the API.
- checksums: sidecar files (FILE.sha256, FILE.sha512, FILE.md5, SHA256SUMS, SHA512SUMS, MD5SUMS):
  which names to look for, and what one says (`Expected`); pure.
- formats: `verify_stream`, one pass over an artifact's bytes that computes its digest and reads
  the archive through (gzip, bzip2, xz, zstd, tar inside any of them, zip), with bounded memory
  and an expansion guard (`Limits`); `verify_file` for a local file and its sidecar; `Verifier`
  for bytes pushed in pieces (an S3 body read by async code). The answer is an `Outcome`: a
  result word and a sentence saying where it failed. Its parts, private to this package:
  _pipeline (what the stages share: limits, the expansion guard, the stage protocol), _streams
  (magic bytes; gzip, bzip2, xz, zstd), _tar, _zip.

Blocking by design (it reads files and sleeps under the budget): callers run it in worker threads,
never on the event loop. May import the pure core and the standard library (plus zstandard);
never the database, the scanner, the runtime or the HTTP layer.
"""
