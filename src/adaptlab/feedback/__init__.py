"""Human feedback collection: sample candidates, let people rank them in a browser, export preference data.

``project`` creates and exports projects, ``db`` is the SQLite store, ``app`` the web app; the ``adaptlab feedback``
commands are ``adaptlab.cli.feedback``.
"""
