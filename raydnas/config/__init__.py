"""The config layer: an experiment's YAML as typed sections, validated before anything runs, and
``--set`` overrides. Imports the axes (their registries validate names), the model and the data."""
