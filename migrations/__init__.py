"""SQL for the blob store and the read-model tables, applied in order by ``kf migrate``."""
