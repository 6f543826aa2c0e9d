/*
 * libFuzzer driver for cluster/slots: the input is a stream of RESP replies (decoded by hiredis,
 * our codec), each read as a CLUSTER SLOTS reply, and the input as text is also read as a MOVED or
 * ASK error. Checks that every map built is consistent: owners point at nodes, ranges hold valid
 * slots, limits hold.
 */
#include "cluster/resp.h"
#include "cluster/slots.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed: %s (line %d)\n", #cond, __LINE__);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_map(const struct sb_slot_map *m)
{
    REQUIRE(m->nnodes <= SB_SLOTS_MAX_NODES);
    for (unsigned s = 0; s < SB_SLOTS; s++)
        REQUIRE(m->owner[s] == SB_SLOT_NONE || m->owner[s] < m->nnodes);
    for (unsigned i = 0; i < m->nranges; i++) {
        const struct sb_slot_range *r = &m->ranges[i];
        REQUIRE(r->start <= r->end && r->end < SB_SLOTS);
        REQUIRE(r->nreplicas <= SB_SLOTS_MAX_REPLICAS);
        REQUIRE(m->owner[r->start] == r->master);
        for (unsigned k = 0; k < r->nreplicas; k++)
            REQUIRE(r->replicas[k] < m->nnodes);
    }
    for (unsigned i = 0; i < m->nnodes; i++) {
        REQUIRE(m->nodes[i].port >= 1);
        REQUIRE(strlen(m->nodes[i].host) <= SB_SLOTS_HOST_MAX);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct sb_slot_map m;
    redisReader *rd = sb_redis_reader_new();
    if (!rd)
        return 0;
    redisReaderFeed(rd, (const char *)data, size);
    for (int i = 0; i < 64; i++) {
        void *reply = NULL;
        if (redisReaderGetReply(rd, &reply) != REDIS_OK || !reply)
            break;
        int rc = sb_slot_map_parse(&m, reply, "127.0.0.1");
        if (rc == 0) {
            check_map(&m);
            sb_slot_map_destroy(&m);
        } else {
            REQUIRE(m.nodes == NULL && m.ranges == NULL && m.nnodes == 0);
        }
        freeReplyObject(reply);
    }
    redisReaderFree(rd);
    struct sb_slot_redirect r;
    if (sb_slot_redirect_parse((const char *)data, size, &r) == 0) {
        REQUIRE(r.slot < SB_SLOTS && r.port >= 1);
        REQUIRE(strlen(r.host) <= SB_SLOTS_HOST_MAX);
    }
    return 0;
}
