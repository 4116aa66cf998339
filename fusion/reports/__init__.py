"""What leaves the bank's analysts: the match and model reports, and the gate they pass through.

`coverage` computes the match report's tables from the store; `match` and `models` render the
two reports as plain HTML pages with PNG plots (`html` and `plots` are their shared page, table,
number and figure helpers); `campaign` renders a campaign's readout; `disclosure` is the one
small-cell suppression (k-anonymity) every published table goes through.
"""

__all__ = [
    "campaign",
    "coverage",
    "disclosure",
    "html",
    "journeys",
    "match",
    "model_plots",
    "model_sections",
    "models",
    "monitoring",
    "plots",
    "value_demand",
]
