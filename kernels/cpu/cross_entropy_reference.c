// cross_entropy_reference.c: not written yet.
