"""backup-monitor: a self-hosted service that watches backups.

The layers, from the bottom; a module imports from its own layer and those below, never above:

1. the pure core: visible, units, jobspec, scanner.rules, notify.notice, notify.events,
   notify.silences. Computation only (the standard library, pydantic, cronsim): no database,
   HTTP or filesystem walking; tests/unit/test_pure_core.py imports each alone and checks.
2. settings, logs, errors, the YAML file readers; storage: db, models, migrate, and the SQL of
   one aggregate each (pings, tokens, silences, retention, notify.outbox, scanner.runs).
3. the scanner (scanner/: sources, scanner, watch) and notify (config, transports, dispatcher).
4. the operations the API, the dashboard and the CLI share: jobs, jobsfile.
5. the runtime: runtime/ (the background components), keys, scheduler (the original request's
   facade).
6. the HTTP surfaces: api/, web/, and app and server, which wire them.
7. the entry points: startup (what a command does before it serves), demo, cli.

No import cycle, not even through an import inside a function
(tests/unit/test_import_cycles.py).
"""
