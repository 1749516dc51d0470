"""Reports of a sweep: leaderboard (CSV, Markdown, terminal), plots, prompt A/B tests, HTML page.

    report = build_report("runs/demo")   # from stored results alone
    print(report.html)
"""

from tunelab.report.build import Report, build_report, terminal_table
from tunelab.report.results import find_sweeps, load_results

__all__ = ["Report", "build_report", "find_sweeps", "load_results", "terminal_table"]
