"""adaptlab's version, in a module of its own: code inside the package reads it from here, never from the public
facade (``adaptlab/__init__.py``), which sits above every other module."""

__version__ = "0.1.0"
