// collectives: the one-rank implementation and the helpers of collectives.h.
#include "collectives.h"

#include <string.h>

int64_t dsv3_elem_size(Dsv3ElemType type) {
    switch (type) {
    case DSV3_ELEM_F32: return 4;
    case DSV3_ELEM_F64: return 8;
    case DSV3_ELEM_I64: return 8;
    }
    return 0;
}

const char *dsv3_comm_group_name(Dsv3CommGroup g) {
    static const char *const names[DSV3_COMM_GROUP_COUNT] = {"tp",           "cp", "fsdp",
                                                             "dp_replicate", "dp", "pp"};
    return (unsigned)g < DSV3_COMM_GROUP_COUNT ? names[g] : "unknown group";
}

static Dsv3Err local_group(const Dsv3Collectives *self, Dsv3CommGroup g, int64_t *size,
                           int64_t *rank) {
    (void)self;
    DSV3_CHECK((unsigned)g < DSV3_COMM_GROUP_COUNT, DSV3_ERR_USAGE, "collectives: group %d unknown",
               (int)g);
    *size = 1;
    *rank = 0;
    return DSV3_OK;
}

static Dsv3Err local_copy(void *recv, const void *send, int64_t count, Dsv3ElemType type) {
    DSV3_CHECK(count >= 0 && dsv3_elem_size(type) > 0, DSV3_ERR_USAGE,
               "collectives: count %lld of element type %d", (long long)count, (int)type);
    if (recv != send && count > 0) memcpy(recv, send, (size_t)(count * dsv3_elem_size(type)));
    return DSV3_OK;
}

static Dsv3Err local_all_gather(Dsv3Collectives *self, Dsv3CommGroup g, void *recv,
                                const void *send, int64_t count, Dsv3ElemType type) {
    int64_t size = 0, rank = 0;
    DSV3_CALL(local_group(self, g, &size, &rank));
    return local_copy(recv, send, count, type);
}

static Dsv3Err local_reduce_scatter(Dsv3Collectives *self, Dsv3CommGroup g, void *recv,
                                    const void *send, int64_t count, Dsv3ElemType type,
                                    Dsv3ReduceOp op) {
    (void)op;
    int64_t size = 0, rank = 0;
    DSV3_CALL(local_group(self, g, &size, &rank));
    return local_copy(recv, send, count, type);
}

static Dsv3Err local_all_reduce(Dsv3Collectives *self, Dsv3CommGroup g, void *buf, int64_t count,
                                Dsv3ElemType type, Dsv3ReduceOp op) {
    (void)op;
    int64_t size = 0, rank = 0;
    DSV3_CALL(local_group(self, g, &size, &rank));
    return local_copy(buf, buf, count, type);
}

static Dsv3Err local_shift(Dsv3Collectives *self, Dsv3CommGroup g, void *recv, const void *send,
                           int64_t count, Dsv3ElemType type) {
    int64_t size = 0, rank = 0;
    DSV3_CALL(local_group(self, g, &size, &rank));
    return local_copy(recv, send, count, type);
}

Dsv3Collectives dsv3_collectives_local = {local_group, local_all_gather, local_reduce_scatter,
                                          local_all_reduce, local_shift};
