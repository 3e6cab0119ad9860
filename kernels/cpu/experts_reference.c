// experts_reference.c: not written yet.
