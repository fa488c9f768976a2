"""The database: engine and session factory with the dialect helpers (engine: is_postgresql,
rowcount claims, locks), the tables (models), the migrations runner (migrate), and telling a
database that is down apart from a statement that failed (errors).

May import SQLAlchemy, the drivers, alembic (in migrate only) and the pure core; never the
store, the scanner, notify, the runtime, the HTTP surfaces or the CLI.
"""
