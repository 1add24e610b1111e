"""The model layer: ops and their weighting, search spaces, genotypes, cells, the supernet and the
discrete network. Imports the package root only; no config, no search, no Ray."""
