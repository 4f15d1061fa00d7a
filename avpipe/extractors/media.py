"""Frame decoding shared by the stages, ``render`` and the benchmarks.

Every per-frame stage numbers its rows by this decoder's frames (row ``i`` = the ``i``-th frame in
presentation order), so whatever draws or measures those rows must decode with it too.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def iter_frames(path: str | Path, prefetch: int = 8) -> Iterator[np.ndarray]:
    """RGB frames (H, W, 3) uint8 in presentation order, decoded by streaming.

    A background thread decodes ahead (bounded queue of ``prefetch`` frames) so decoding
    overlaps detection; FFmpeg's own frame/slice threads are on (``thread_type="AUTO"``).
    """
    import av

    q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            with av.open(str(path)) as c:
                vs = c.streams.video[0]
                vs.thread_type = "AUTO"
                for fr in c.decode(vs):
                    if stop.is_set():
                        break
                    q.put(fr.to_ndarray(format="rgb24"))
        except Exception as e:  # surfaced in the consumer
            q.put(e)
        finally:
            q.put(done)

    th = threading.Thread(target=work, daemon=True, name="avpipe-decode")
    th.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        while th.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(timeout=0.05)
