"""Notifications: the notice, the channels that send it, and the dispatcher."""
