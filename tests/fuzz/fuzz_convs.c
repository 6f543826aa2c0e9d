/*
 * libFuzzer driver for the answers of cluster/convs.c's scripts: the input is a stream of RESP
 * replies (decoded by hiredis, our codec), each read as the answer to a send, a sync, a receipt,
 * a group change and a summary (conv_list). Redis is ours, but a reply is still input: any shape
 * must be refused or read without reaching outside it. White-box: includes convs.c for its
 * static parse().
 */
#include "cluster/convs.c"
#include "cluster/resp.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed: %s (line %d)\n", #cond, __LINE__);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void read_all(const struct sb_convs_result *res)
{
    volatile size_t sum = 0; /* touches every byte named, for ASan */
    for (size_t i = 0; i < res->nmembers; i++)
        for (size_t k = 0; k < res->members[i].len; k++)
            sum += (unsigned char)res->members[i].id[k];
    for (size_t i = 0; i < res->nremoved; i++)
        for (size_t k = 0; k < res->removed[i].len; k++)
            sum += (unsigned char)res->removed[i].id[k];
    for (size_t i = 0; i < res->nmsgs; i++) {
        const struct sb_convs_msg *m = &res->msgs[i];
        for (size_t k = 0; k < m->body_len; k++)
            sum += (unsigned char)m->body[k];
        for (size_t k = 0; k < m->user_len; k++)
            sum += (unsigned char)m->user[k];
        for (size_t k = 0; k < m->device_len; k++)
            sum += (unsigned char)m->device[k];
        for (size_t k = 0; k < m->client_id_len; k++)
            sum += (unsigned char)m->client_id[k];
    }
    for (size_t k = 0; k < res->code_len; k++)
        sum += (unsigned char)res->code[k];
    for (size_t k = 0; k < res->message_len; k++)
        sum += (unsigned char)res->message[k];
    for (size_t k = 0; k < res->owner_len; k++)
        sum += (unsigned char)res->owner[k];
    for (size_t k = 0; k < res->name_len; k++)
        sum += (unsigned char)res->name[k];
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    redisReader *rd = sb_redis_reader_new(); /* as every Redis connection reads */
    REQUIRE(rd);
    if (redisReaderFeed(rd, (const char *)data, size) != REDIS_OK) {
        redisReaderFree(rd);
        return 0;
    }
    static const uint8_t ops[] = {'s', 'y', 'r', 'c', 'm'};
    void *reply = NULL;
    for (int n = 0; n < 8 && redisReaderGetReply(rd, &reply) == REDIS_OK && reply; n++) {
        for (size_t i = 0; i < sizeof(ops); i++) {
            struct call c = {.op = ops[i], .ts_ms = 1, .user_len = 5, .device_len = 5};
            memcpy(c.user, "alice", 5);
            memcpy(c.device, "phone", 5);
            struct sb_convs_result res = {0};
            if (parse(&c, reply, &res)) {
                REQUIRE(res.status >= 0);
                REQUIRE(!res.nmembers || res.members);
                REQUIRE(!res.nmsgs || res.msgs);
                read_all(&res);
            }
            free(res.members);
            free(res.msgs);
            free(res.removed);
        }
        freeReplyObject(reply);
        reply = NULL;
    }
    redisReaderFree(rd);
    return 0;
}
