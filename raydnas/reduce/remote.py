"""Reading an experiment kept on remote storage: its small text files, copied to a local folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import ConfigError

# Small text files worth fetching from remote storage (checkpoints and event files are not).
_FETCH = {"params.json", "result.json", "error.txt", "final.json", "metrics.jsonl",
          "config.yaml", "genotype.txt"}



def is_uri(path: str | Path) -> bool:
    """Whether ``path`` is a storage URI (``s3://``, ``gs://``, ``file://``...)."""
    return "://" in str(path)


def fetch_remote(uri: str, dest: Path) -> Path:
    """Copy the small text files of a remote experiment (``s3://``, ``gs://``, ``file://``...)."""
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(uri)
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except Exception as e:  # noqa: BLE001 - any storage error is a user-input problem here
        raise ConfigError("raydnas reduce", "EXPERIMENT", uri,
                          f"a readable experiment URI ({e})") from None
    root = root.rstrip("/")
    local = dest / Path(root).name
    local.mkdir(parents=True, exist_ok=True)
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(root):].lstrip("/")
        name = rel.rsplit("/", 1)[-1]
        if rel.count("/") > 1 or not (name in _FETCH or name.startswith("experiment_state")):
            continue
        target = local / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(info.path) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return local
