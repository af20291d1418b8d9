"""Receiving: the webhook HTTP front door (Litestar).

``app`` builds the application (routes, start-up, shutdown, health and
metrics); ``service`` holds what a running app holds and takes one webhook
from its route to the spool: checks -> decode -> row -> spool.
"""
