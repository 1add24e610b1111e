"""Reading an experiment kept on remote storage: its small text files, copied to a local folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import ConfigError

# Lazy imports: pyarrow.fs loads only for a storage URI (s3://...).

# Small text files worth fetching from remote storage (checkpoints and event files are not).
_FETCH = {"params.json", "result.json", "error.txt", "final.json", "metrics.jsonl",
          "config.yaml", "genotype.txt", "raydnas_study.json"}



def is_uri(path: str | Path) -> bool:
    """Whether ``path`` is a storage URI (``s3://``, ``gs://``, ``file://``...)."""
    return "://" in str(path)


def fetch_remote(uri: str, dest: Path, where: str = "raydnas reduce") -> Path:
    """Copy the small text files of a remote experiment (``s3://``, ``gs://``, ``file://``...):
    those of the experiment and its trials, and those of ``raydnas evaluate``'s evaluations
    below ``evaluation/``."""
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(uri)
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except Exception as e:  # noqa: BLE001 - any storage error is a user-input problem here
        raise ConfigError(where, "EXPERIMENT", uri,
                          f"a readable experiment URI ({e})") from None
    root = root.rstrip("/")
    local = dest / Path(root).name
    local.mkdir(parents=True, exist_ok=True)
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(root):].lstrip("/")
        name = rel.rsplit("/", 1)[-1]
        deep = rel.count("/") > 1 and not rel.startswith("evaluation/")
        if deep or not (name in _FETCH or name.startswith("experiment_state")):
            continue
        target = local / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(info.path) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return local


def read_text(uri: str) -> str | None:
    """The text of the file at ``uri`` on remote storage, or None if there is none."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def write_text(uri: str, text: str) -> None:
    """Write ``text`` to the file at ``uri`` on remote storage (its folder is created)."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def upload_dir(local: Path, uri: str) -> None:
    """Copy the folder ``local`` and everything below it to ``uri`` on remote storage."""
    import pyarrow.fs as pafs

    pafs.copy_files(str(local), uri)
