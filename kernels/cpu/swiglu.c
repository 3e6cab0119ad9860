// swiglu.c: not written yet.
