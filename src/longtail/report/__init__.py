"""What people look at: the run report (HTML and Markdown, the paper's figures) and the decision-region illustration.

``write_report(run_dir)`` is ``longtail report RUN_DIR``; see ``docs/report.md``
for what each figure shows.
"""

from .build import write_report
from .collect import ReportData, collect

__all__ = ["ReportData", "collect", "write_report"]
