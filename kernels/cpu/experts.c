// experts.c: not written yet.
