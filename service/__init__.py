"""backup-monitor: a self-hosted service that watches backups.

The tree is grouped by layer; each package's `__init__` says what lives there and what it may
import, and tests/unit/test_import_cycles.py checks it:

- core/: the pure core (declarations, units, rules, shared words). No I/O: no database, HTTP
  or filesystem walking (tests/unit/test_pure_core.py imports each module alone and checks).
- db/: engine, dialect helpers, models, migrations, database error handling.
- store/: the SQL of one aggregate each (jobs, pings, silences, tokens, scans, retention).
- config/: the operator's files (a setting's file, the YAML reader, the jobs file).
- scanner/: sources/ (one adapter per kind, no database), the pipeline, the pure judge and
  inventory diff, the writer, the watcher. notify/: notices, channels, transports, dispatcher.
- runtime/: the app factory and its background components (one lifecycle), the AppKeys,
  start-up and the server.
- http/: the JSON API (api/), the dashboard (web/), health and metrics, shared auth.
- cli/: the command line and the demo sandbox. Nothing imports it.
- settings, logs: read by every layer. scheduler: the original request's module-level facade
  over the runtime.

No import cycle, not even through an import inside a function.
"""
