"""Human feedback collection: sample candidates, let people rank them (or give each a thumbs up or down) in a
browser, export preference pairs (or KTO rows).

``project`` creates and exports projects, ``db`` is the SQLite store, ``app`` the web app; the ``adaptlab feedback``
commands are ``adaptlab.cli.feedback``.
"""
