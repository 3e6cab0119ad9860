// linear_reference.c: not written yet.
