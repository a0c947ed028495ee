"""``adaptlab compare``: every adaptation strategy on the same split, measured and reported side by side."""

from adaptlab.compare.plan import ENTRIES, PRESETS, ComparePlan
from adaptlab.compare.plan_file import compare_plan
from adaptlab.compare.run import Comparison, run_comparison

__all__ = ["ENTRIES", "PRESETS", "ComparePlan", "Comparison", "compare_plan", "run_comparison"]
