// moe_permute_reference.c: not written yet.
