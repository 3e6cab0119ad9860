// rope_reference.c: not written yet.
