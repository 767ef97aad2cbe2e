"""How one series is drawn: kept apart from the plot widget so that code which only
describes plots does not pay for importing pyqtgraph."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeriesStyle:
    """Where and how one metric key is drawn."""

    plot_id: str
    plot_title: str
    label: str
    color: str
    line: str = "solid"  # solid | dash | dot
    markers: bool = False  # sparse series (evaluations) are easier to read with symbols
    smooth: bool = True  # the smoothing control applies to this series
    order: int = 1000  # plots are laid out by ascending order, then title
    y_label: str = ""
