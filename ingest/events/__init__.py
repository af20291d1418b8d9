"""The ``pbx.events`` contract: what a webhook is, and the row it becomes.

``spec`` declares the 17 webhooks as Structs; ``decode`` turns request
parameters into one of them; ``table`` owns the row it becomes (columns,
types, ids, the arrival clock, the spool record format and the one insert).
Every other part of the package reaches ``pbx.events`` through these three.
"""
