"""The demo: the churn scenario, run on an embedded or a namespace network, its report, tables
and plot (``scaffold demo``; docs/architecture.md §6)."""

from .results import DemoReport
from .run import DemoOptions, netns_options, run_demo, run_demo_netns

__all__ = ["DemoOptions", "DemoReport", "netns_options", "run_demo", "run_demo_netns"]
