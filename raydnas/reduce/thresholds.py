"""The report's two thresholds (their definitions: :mod:`raydnas.reduce.stats`); a module of
their own so that the CLI's ``--help`` shows them without importing torch or pandas."""

#: a seed has collapsed when at least this share of its normal cell's live ops are
#: parameter-free (skip_connect or a pool)
DEFAULT_COLLAPSE_THRESHOLD = 0.5
#: a seed's discretization is reliable when its gap (val_acc - discrete_val_acc) is below this
DEFAULT_GAP_THRESHOLD = 0.05
