"""The search layer: one supernet search (no Ray): its state, one epoch, the selection of a cell,
measurements, metrics, stop rules and TensorBoard logging. ``run.run_search`` is the entry."""
