/*
 * The RESP reader every Redis connection uses: hiredis 0.14's parser (only as a codec), with
 * reply objects of our own so that a reply's size is bounded before anything is allocated for
 * it. Replies are freed with freeReplyObject as usual.
 */
#ifndef SB_CLUSTER_RESP_H
#define SB_CLUSTER_RESP_H

#include <hiredis/read.h>

/* A reader whose aggregates hold at most 1,048,576 elements (a larger count is a reader
 * error). Free it with redisReaderFree. NULL without memory. */
redisReader *sb_redis_reader_new(void);

#endif
