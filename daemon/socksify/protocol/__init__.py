"""Wire formats, without I/O: each module turns objects into bytes and back."""
