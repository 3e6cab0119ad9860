// router_reference.c: not written yet.
