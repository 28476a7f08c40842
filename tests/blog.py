"""The original blog's client code, as its readers run it (see ../shared/seed/): what must
work unchanged against streamhost."""

from __future__ import annotations

import io

# The serving.properties the blog quotes (falcon-7b-streaming.ipynb), pointed at `tiny`.
SERVING_PROPERTIES = """engine=MPI
option.model_id=tiny
option.trust_remote_code=true
option.tensor_parallel_degree=1
option.max_rolling_batch_size=32
option.rolling_batch=auto
option.output_formatter=jsonlines
option.paged_attention=false
option.enable_streaming=true
"""


class LineIterator:
    """The blog's LineIterator, verbatim in behaviour: it waits for a newline, so a body
    whose last line has none (a TGI JSON answer) makes it spin forever."""

    def __init__(self, stream):
        self.byte_iterator = iter(stream)
        self.buffer = io.BytesIO()
        self.read_pos = 0

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            self.buffer.seek(self.read_pos)
            line = self.buffer.readline()
            if line and line[-1] == ord("\n"):
                self.read_pos += len(line)
                return line[:-1]
            try:
                chunk = next(self.byte_iterator)
            except StopIteration:
                if self.read_pos < self.buffer.getbuffer().nbytes:
                    continue
                raise
            if "PayloadPart" not in chunk:
                print("Unknown event type:" + chunk)
                continue
            self.buffer.seek(0, io.SEEK_END)
            self.buffer.write(chunk["PayloadPart"]["Bytes"])
