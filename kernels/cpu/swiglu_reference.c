// swiglu_reference.c: not written yet.
