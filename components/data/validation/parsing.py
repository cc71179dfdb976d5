"""The annotation file as a stream of `SampleChunk`s, parsed in this process (workers=1) or in a child
process that streams Arrow IPC chunks to this one (parsing is most of the per-row work)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from ..llava_format import CHUNK_SCHEMA, SampleChunk, iter_sample_chunks


def sample_chunks(annotation_path: Path, chunk_rows: int, in_process: bool) -> Iterator[SampleChunk]:
    """`iter_sample_chunks`, here or in a child process that parses while this one checks, routes and
    writes (parsing is two thirds of the per-row work). The child streams Arrow IPC through a pipe, which
    holds about one chunk, so memory stays bounded; an error in the child (AnnotationFormatError ...)
    is raised here."""
    if in_process:
        yield from iter_sample_chunks(annotation_path, chunk_rows=chunk_rows)
        return
    context = multiprocessing.get_context()
    data_read, data_write = context.Pipe(duplex=False)  # Connections: their descriptors survive spawn too
    status_read, status_write = context.Pipe(duplex=False)
    _widen_pipe(data_write.fileno())
    child = context.Process(target=_parse_into, args=(str(annotation_path), chunk_rows, data_write, status_write),
                            daemon=True, name="validate-parse")
    child.start()
    data_write.close()
    status_write.close()
    row_start = 0
    try:
        with os.fdopen(os.dup(data_read.fileno()), "rb", buffering=1 << 20) as source:
            try:
                for batch in pa.ipc.open_stream(source):
                    yield SampleChunk.from_batch(batch, row_start)
                    row_start += batch.num_rows
                failure = None
            except (pa.ArrowInvalid, OSError) as err:  # the stream broke off: the status says why
                failure = err
        status = status_read.recv() if status_read.poll(60) else ("error", failure or RuntimeError("no status"))
        if status[0] == "error":
            raise status[1]
    except EOFError:
        raise RuntimeError(f"the parsing process died (exit code {child.exitcode})") from None
    finally:
        data_read.close()
        status_read.close()
        if child.is_alive():
            child.terminate()
        child.join()


def _widen_pipe(fd: int) -> None:
    """Fewer, larger pipe transfers (Linux: F_SETPIPE_SZ up to /proc/sys/fs/pipe-max-size)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError):
        pass


def _parse_into(path: str, chunk_rows: int, data, status) -> None:
    try:
        with (os.fdopen(os.dup(data.fileno()), "wb", buffering=0) as sink,
              pa.ipc.new_stream(sink, CHUNK_SCHEMA) as writer):
            data.close()
            for chunk in iter_sample_chunks(path, chunk_rows=chunk_rows):
                writer.write_batch(chunk.to_batch())
        status.send(("ok", None))
    except BaseException as err:  # every failure goes to the parent, which raises it
        try:
            status.send(("error", err))
        except Exception:
            status.send(("error", RuntimeError(f"{type(err).__name__}: {err}")))
    finally:
        status.close()
