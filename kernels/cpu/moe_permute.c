// moe_permute.c: not written yet.
