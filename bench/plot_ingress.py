"""A picture of one ``bench/ingress.py`` run: what each setup spends per request, and what
the goals allow.

One horizontal bar per setup of the run's ``throughput``: the CPU its balancer spent per
request (µs), split by part where the run measured parts (a deployment's ``up``, ingress and
publishers; the floor's switch, ingress and publisher), with the replicas' and wrk's CPU per
request after it in grey. Where a throughput goal applies (``cpu_budget``), a black tick marks
the budget the machine leaves the balancer at the goal's rate. The bar is labelled with the
setup's requests/s.

    PYTHONPATH=src python bench/ingress.py --quick > run.json
    python bench/plot_ingress.py run.json ingress.png

Needs matplotlib (a dev dependency).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: the parts a setup's balancer is split into, in the order drawn
PARTS = ("ingress", "up", "switch", "publishers", "publisher")
#: the legend's name of each part (a deployment's and the floor's alike)
LEGEND = {
    "ingress": "ingress",
    "up": "switches (up)",
    "switch": "switches (up)",
    "publishers": "publishers",
    "publisher": "publishers",
    "balancer": "whole balancer",
    "floor": "whole floor (one process)",
}
COLORS = {
    "ingress": "#4477aa",
    "up": "#ee6677",
    "switch": "#ee6677",
    "publishers": "#228833",
    "publisher": "#228833",
    "balancer": "#aa3377",
    "floor": "#ccbb44",
}


def bars(run: dict[str, Any]) -> list[tuple[str, list[tuple[str, float]], float, float, list[float]]]:
    """Per setup with a CPU measure: its name, its balancer's parts (name, µs), the
    replicas' and wrk's µs, and the budgets of the goals it has (µs)."""
    throughput = run.get("throughput")
    if not isinstance(throughput, dict) or not throughput:
        raise ValueError("no 'throughput' in this JSON: is it bench/ingress.py's output?")
    budgets: dict[str, list[float]] = {}
    for key, goal in (run.get("cpu_budget") or {}).items():
        budgets.setdefault(key.split("/")[0], []).append(float(goal["budget_us_per_request"]))
    out = []
    for name, result in throughput.items():
        cpu = result.get("cpu_us_per_request")
        if not isinstance(cpu, dict) or name == "direct":
            continue
        parts = [(part, float(cpu[part])) for part in PARTS if part in cpu]
        if not parts:  # one process (HAProxy's threads count as one)
            parts = [("floor" if name.startswith("floor") else "balancer", float(cpu["balancer"]))]
        others = float(cpu.get("replicas", 0.0)) + float(cpu.get("wrk", 0.0))
        out.append((name, parts, others, float(result.get("requests_per_s") or 0.0), budgets.get(name, [])))
    return out


def plot(run: dict[str, Any], path: Path) -> None:
    """Write the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = bars(run)
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(rows) + 1.8), dpi=110)
    seen: set[str] = set()
    for y, (_, parts, others, rate, budgets) in enumerate(reversed(rows)):
        left = 0.0
        for part, us in parts:
            label = LEGEND.get(part, part) if LEGEND.get(part, part) not in seen else None
            seen.add(LEGEND.get(part, part))
            ax.barh(y, us, left=left, color=COLORS.get(part, "#aa3377"), label=label)
            left += us
        label = "replicas + wrk" if "others" not in seen else None
        seen.add("others")
        ax.barh(y, others, left=left, color="#dddddd", label=label)
        ax.text(left + others + 2, y, f"{rate:,.0f} req/s", va="center", fontsize=8)
        for budget in budgets:
            label = "budget of a goal" if "budget" not in seen else None
            seen.add("budget")
            ax.plot([budget, budget], [y - 0.4, y + 0.4], color="black", linewidth=2, label=label)
    ax.set_yticks(range(len(rows)), [name for name, *_ in reversed(rows)], fontsize=8)
    ax.set_xlabel("CPU per request (µs, user + system)")
    ax.set_title("bench/ingress.py: CPU per request by setup and part (ticks: the budget of a goal)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_xlim(0, ax.get_xlim()[1] * 1.12)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="bench/ingress.py's JSON output")
    parser.add_argument("png", type=Path, help="the picture to write")
    args = parser.parse_args(argv)
    try:
        run = json.loads(args.run.read_text())
        plot(run, args.png)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.exit(f"bench/plot_ingress.py: {args.run}: {exc}")
    except ImportError:
        sys.exit("bench/plot_ingress.py needs matplotlib: pip install -e '.[dev]'")
    print(f"wrote {args.png}", file=sys.stderr)


if __name__ == "__main__":
    main()
