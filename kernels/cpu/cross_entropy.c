// cross_entropy.c: not written yet.
