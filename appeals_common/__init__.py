"""Code shared by every service of the enterprise appeals suite.

Envelope, bus schemas, topology, outbox/inbox, dead letters, calendar, settings.
Nothing here imports a service package.
"""
