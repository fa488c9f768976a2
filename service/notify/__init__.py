"""Notifications: the notice (notice, events, outbox), the channels' declarations (config), how
a notice leaves over each kind of channel (transports/), and the dispatcher that routes the
outbox to the channels and records every attempt.

notice, events and silences are part of the pure core (no database, no network: see
service/__init__.py); outbox holds the SQL of the outbox; config reads the channels file;
transports may use the network, never the database; the dispatcher ties them to the database.
"""
