"""The results layer: reading search runs and Tune experiments, local or remote (``s3://``,
``gs://``), into plain records. No torch at import, no Ray."""
