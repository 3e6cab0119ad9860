// adamw_reference.c: not written yet.
