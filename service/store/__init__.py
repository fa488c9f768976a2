"""The SQL, one module per aggregate: jobs (find, list, create, change, delete, history), pings
(the group-committed heartbeats and their runs), silences, tokens, scans (the scan_runs record),
retention (old rows deleted in bounded pieces), leases (a row held by one replica until a
moment: the one lease primitive) and fleet (the replicas alive, and each one's share of the
listings). No HTTP here.

May import the database layer, the pure core, notify's pure rules and outbox, and the scanner
(a changed job is judged again at once); never the runtime, the HTTP surfaces or the CLI.
"""
