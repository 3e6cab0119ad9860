// rope.c: not written yet.
