/*
 * Redis Cluster's key space, as the cluster specification defines it: CRC16 (XMODEM) of the key,
 * or of its hash tag, modulo 16384 slots; the slot map a CLUSTER SLOTS reply describes (masters
 * and replicas per slot range); and the MOVED / ASK redirections a node answers with.
 *
 * No I/O. Parsing reads hiredis reply trees (hiredis is our RESP codec) and copies what it keeps,
 * so nothing points into the reply afterwards. Any thread; a map belongs to its caller.
 */
#ifndef SB_CLUSTER_SLOTS_H
#define SB_CLUSTER_SLOTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct redisReply;

#define SB_SLOTS 16384
#define SB_SLOT_NONE UINT16_MAX  /* a slot no known master serves */
#define SB_SLOTS_MAX_NODES 1000  /* distinct nodes in one map (Redis's own recommended limit) */
#define SB_SLOTS_MAX_REPLICAS 16 /* replicas listed for one slot range */
#define SB_SLOTS_HOST_MAX 255    /* bytes of a node's host (NET_HOST_STR_LEN - 1 in Redis) */

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0, no reflection): 0x31C3 for "123456789". */
uint16_t sb_crc16(const void *buf, size_t len);

/*
 * The slot of a key: when the key holds a '{' with a '}' after it and at least one byte between
 * the first '{' and the first '}' that follows it, only those bytes are hashed (the hash tag);
 * otherwise the whole key is. Any bytes, NUL included.
 */
unsigned sb_slot_of(const void *key, size_t len);

struct sb_slot_node {
    char host[SB_SLOTS_HOST_MAX + 1]; /* NUL-terminated: an IP address or a host name */
    uint16_t port;
};

struct sb_slot_range {
    uint16_t start, end; /* inclusive */
    uint16_t master;     /* index into nodes */
    uint16_t nreplicas;
    uint16_t replicas[SB_SLOTS_MAX_REPLICAS];
};

/* A topology. Zero-filled is an empty map (no slot served); sb_slot_map_destroy frees it. */
struct sb_slot_map {
    uint16_t owner[SB_SLOTS]; /* each slot's master (index into nodes), or SB_SLOT_NONE */
    struct sb_slot_node *nodes;
    unsigned nnodes;
    struct sb_slot_range *ranges; /* in reply order */
    unsigned nranges;
};

/*
 * Builds *m (whose previous contents are ignored, not freed) from a CLUSTER SLOTS reply. A node
 * whose host is "" is at origin_host, the host the reply came from (the spec's "same endpoint");
 * one whose host is "?" has no known endpoint: a range whose master has none stays unserved and
 * such a replica is left out. Returns 0; -EBADMSG when the reply is not a well-formed CLUSTER
 * SLOTS reply (wrong types, a slot outside 0..16383, start > end, a slot in two ranges, a port
 * outside 1..65535, a host with bytes other than visible ASCII); -EMSGSIZE past a limit above;
 * -ENOMEM. On error *m is left empty (and needs no destroy).
 */
int sb_slot_map_parse(struct sb_slot_map *m, const struct redisReply *reply,
                      const char *origin_host);

/* Frees what parse allocated and leaves *m empty. */
void sb_slot_map_destroy(struct sb_slot_map *m);

/* The master serving slot, or NULL. */
static inline const struct sb_slot_node *sb_slot_map_owner(const struct sb_slot_map *m,
                                                           unsigned slot)
{
    return slot < SB_SLOTS && m->owner[slot] != SB_SLOT_NONE ? &m->nodes[m->owner[slot]] : NULL;
}

/* A redirection from a node: "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>". */
struct sb_slot_redirect {
    bool is_ask;
    uint16_t slot;
    uint16_t port;
    char host[SB_SLOTS_HOST_MAX + 1]; /* "" when the node did not say (":port": same host) */
};

/*
 * Parses an error reply's text (err[0..len), no CRLF). Returns 0 with *out filled, or -EINVAL
 * when it is not a well-formed MOVED or ASK error (any other error, a bad slot, port or host).
 */
int sb_slot_redirect_parse(const char *err, size_t len, struct sb_slot_redirect *out);

#endif
