"""The report's thresholds and limits (the thresholds' definitions: :mod:`raydnas.reduce.stats`);
a module of their own, with no imports, so that the CLI's ``--help`` shows them without importing
torch or pandas, and so that the report and its plots share them."""

#: a seed has collapsed when at least this share of its normal cell's live ops are
#: parameter-free (skip_connect or a pool)
DEFAULT_COLLAPSE_THRESHOLD = 0.5
#: a seed's discretization is reliable when its gap (val_acc - discrete_val_acc) is below this
DEFAULT_GAP_THRESHOLD = 0.05
#: groups shown in the markdown and the plots of a large study (the CSV holds all)
DEFAULT_TOP = 20


def shown(df) -> int:
    """How many groups of the table ``df`` the markdown and plots show (its ``top`` attribute;
    0: all)."""
    top = df.attrs.get("top") or 0
    return len(df) if not top else min(top, len(df))
