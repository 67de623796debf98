"""Build an edge shard's HNSW and sparse indexes, in a process of its own.

``python -m infra.optimize_shard PATH`` opens the shard at PATH, runs the
engine's optimizers until nothing is left to do, flushes and closes it. The
engine holds Python's GIL for the whole optimisation (minutes at 100k points),
so it must not run inside a process that serves requests; a rebuild runs this
on its new shard before switching it in.
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> int:
    import qdrant_edge

    path = argv[0]
    started = time.monotonic()
    shard = qdrant_edge.EdgeShard.load(path)
    shard.optimize()
    info = shard.info()
    shard.flush()
    shard.close()
    print(
        f'{{"points": {info.points_count}, "segments": {info.segments_count},'
        f' "indexed_vectors": {info.indexed_vectors_count},'
        f' "seconds": {time.monotonic() - started:.1f}}}'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
