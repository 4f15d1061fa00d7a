"""Incremental shard writing: each video's result goes into the task's shard as soon as it exists.

Why: collecting every result of a task before writing held them all at once (4 × 60-minute
videos of ``faces`` ≈ 13 GB). A :class:`ShardWriter` writes each result into the task's
temporary shard on :meth:`ShardWriter.add` and keeps only the row count, so the worker can drop
the result right away.

Crash safety is unchanged: the shard is written under a temporary name by exactly one worker;
:meth:`ShardWriter.commit` fsyncs it, renames it into place and returns the
:class:`~avpipe.pipeline.index.ShardRecord` for the *driver* to commit to the index. Nothing is
indexed before that, so a worker killed mid-write leaves only a temp file, which ``cache gc``
removes. A result that fails half-way (a stage's chunk generator raising, a bad row count) is
deleted from the temp shard and never listed in the record.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from avpipe.pipeline.atomic import commit_file, temp_path_for
from avpipe.pipeline.chunks import n_rows
from avpipe.pipeline.discover import content_hash
from avpipe.pipeline.index import ShardRecord
from avpipe.pipeline.stage import StageResult


class ShardWriter:
    """One task's shard: ``add`` results one by one, then ``commit`` (or ``abort``).

    The temp file is created on the first ``add``, so a task whose videos all fail leaves no
    file; ``commit`` with nothing added returns None. Use as a context manager to abort on error.
    """

    def __init__(self, root: str | Path, stage: str, fingerprint: str, provenance: Mapping[str, Any]) -> None:
        from avpipe.pipeline.store import shard_dir

        self.root = Path(root)
        self.final = shard_dir(root, stage, fingerprint) / f"{uuid.uuid4().hex}.h5"
        self.provenance = dict(provenance)
        self.rows: dict[str, int] = {}
        self.tmp: Path | None = None
        self._h5: Any = None
        self._held: int | None = None  # flock on the temp file: gc keeps what a live writer holds

    def _file(self) -> Any:
        if self._h5 is None:
            import h5py

            from avpipe.pipeline.lock import hold_file

            self.tmp = temp_path_for(self.final)
            self._held = hold_file(self.tmp)
            # HDF5's own file lock is an flock too and would collide with ours; only this writer
            # ever opens a temp shard, so HDF5's lock adds nothing here
            self._h5 = h5py.File(self.tmp, "w", locking=False)
        return self._h5

    def add(self, content_id: str, result: StageResult) -> int:
        """Write one video's result (chunk by chunk for a RowChunks); returns its row count.
        On any error the video's partial group is removed and the error propagates."""
        from avpipe.pipeline.shard import write_result

        h5 = self._file()
        try:
            write_result(h5, content_id, result, {**self.provenance, "content_id": content_id})
        except BaseException:
            self.rows.pop(content_id, None)
            try:
                if content_id in h5:
                    del h5[content_id]
            except Exception:  # noqa: S110 - a broken file (full disk): the caller aborts it
                pass
            raise
        self.rows[content_id] = n_rows(result.data)
        h5.flush()
        return self.rows[content_id]

    def discard(self, content_id: str) -> None:
        """Remove one video's already written group (its source changed while it was read)."""
        if self._h5 is not None and content_id in self._h5:
            del self._h5[content_id]
            self._h5.flush()
        self.rows.pop(content_id, None)

    def commit(self) -> ShardRecord | None:
        """Close, fsync and rename the shard into place; the record for the driver to index."""
        if not self.rows:
            self.abort()
            return None
        try:
            self._h5.close()
            self._h5 = None
            commit_file(self.tmp, self.final)  # type: ignore[arg-type]
        except BaseException:
            self.abort()
            raise
        self.tmp = None
        self._release()
        st = self.final.stat()
        return ShardRecord(self.final.relative_to(self.root).as_posix(), st.st_size, st.st_mtime_ns,
                           content_hash(self.final), dict(self.rows))

    def _release(self) -> None:
        from avpipe.pipeline.lock import release_file

        release_file(self._held)
        self._held = None

    def abort(self) -> None:
        """Drop the temp shard (nothing of it was indexed)."""
        self._release()
        if self._h5 is not None:
            try:
                self._h5.close()
            except Exception:  # noqa: S110 - the file is being thrown away
                pass
            self._h5 = None
        if self.tmp is not None:
            try:
                self.tmp.unlink(missing_ok=True)
            except OSError:  # its folder vanished, or a read-only disk: gc removes it later
                pass
            self.tmp = None

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None:
            self.abort()
