"""The one Lightning engine behind every gradient-based strategy (``engine``, ``module``, ``data``) and the
options it takes (``options``, importable without torch)."""
