// attention_reference.c: not written yet.
