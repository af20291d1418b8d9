"""``python -m bench run scale``: issue 15's figures at a year of data (see :mod:`bench.scale.run`)."""
