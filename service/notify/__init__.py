"""Notifications: the notice (notice, events, outbox), the channels' declarations (config), how
a notice leaves over each kind of channel (transports/), and the dispatcher that routes the
outbox to the channels and records every attempt."""
