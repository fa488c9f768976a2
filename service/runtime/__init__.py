"""The runtime: the background components an app runs, each with one lifecycle.

- lifecycle: the `Component` protocol (`async start()`, `async stop(grace)`) every background
  component follows (ping writer, notification dispatcher, scan coordinator, deadline tick,
  scan scheduler), `component_ctx` (an app cleanup context for one), `wait_for_condition`.
- coordinator: `ScanCoordinator`, one full scan at a time for one app, drained on stop.
- tick: `DeadlineTick`, the jobs due between full scans, with its own ping baseline.
- scheduling: `ScanScheduler`, one app's APScheduler wiring (full scan, tick, retention).
- fleet: `Fleet`, this replica's membership of a PostgreSQL fleet (its heartbeat) and its share
  of the listings (the rules and SQL in service.store.fleet).
- verifier: `Verifier`, the artifacts' and repositories' verification (service.verify's engine
  in worker threads, leased per artifact in the database), each result judged at once.
- remote_verify: an S3 object or an SFTP file verified by streaming it over its source's own
  connection (never on disk), for the verifier.

Each app builds its own in its cleanup contexts (service/runtime/app.py) and holds them under
AppKeys (service/runtime/keys.py): nothing here is process-global. `service/scheduler.py` is the
original request's module-level facade over these. May import aiohttp, the scanner, the store
(retention, fleet, verifications), db, models, errors, settings and the verify engine; imports
neither the app, the keys, the API nor the facade.
"""
