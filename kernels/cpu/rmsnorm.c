// rmsnorm.c: not written yet.
