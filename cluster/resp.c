/* The RESP reader: hiredis' parser with replies of our own (see resp.h). */
#include "cluster/resp.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

/*
 * hiredis 0.14 allocates an aggregate's element vector as soon as it reads the count, so a
 * "*666666662" from a broken or hostile peer would ask for gigabytes. These reply functions
 * are hiredis' defaults in effect (so freeReplyObject frees what they make), except that an
 * aggregate over READER_MAX_ELEMENTS is refused: the reader reports an error and the
 * connection is dropped.
 */
#define READER_MAX_ELEMENTS (1 << 20)

static void *reply_attach(const redisReadTask *task, redisReply *r)
{
    if (task->parent) {
        redisReply *parent = task->parent->obj;
        parent->element[task->idx] = r;
    }
    return r;
}

static void *reply_string(const redisReadTask *task, char *str, size_t len)
{
    redisReply *r = calloc(1, sizeof(*r));
    char *copy = r ? malloc(len + 1) : NULL;
    if (!copy) {
        free(r);
        return NULL;
    }
    if (len)
        memcpy(copy, str, len);
    copy[len] = '\0';
    r->type = task->type;
    r->str = copy;
    r->len = len;
    return reply_attach(task, r);
}

static void *reply_array(const redisReadTask *task, int elements)
{
    if (elements < 0 || elements > READER_MAX_ELEMENTS)
        return NULL;
    redisReply *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    if (elements > 0 && !(r->element = calloc((size_t)elements, sizeof(*r->element)))) {
        free(r);
        return NULL;
    }
    r->type = task->type;
    r->elements = (size_t)elements;
    return reply_attach(task, r);
}

static void *reply_integer(const redisReadTask *task, long long value)
{
    redisReply *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->type = REDIS_REPLY_INTEGER;
    r->integer = value;
    return reply_attach(task, r);
}

static void *reply_nil(const redisReadTask *task)
{
    redisReply *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->type = REDIS_REPLY_NIL;
    return reply_attach(task, r);
}

static redisReplyObjectFunctions reply_functions = {
    reply_string, reply_array, reply_integer, reply_nil, freeReplyObject,
};

redisReader *sb_redis_reader_new(void)
{
    return redisReaderCreateWithFunctions(&reply_functions);
}
