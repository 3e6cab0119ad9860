// rmsnorm_reference.c: not written yet.
