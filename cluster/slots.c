/*
 * Slots, the slot map and redirections (see slots.h). Everything here reads untrusted bytes: a
 * node's reply decides what we allocate and where we connect, so every size and number is
 * checked before it is used.
 */
#include "cluster/slots.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

/* The XMODEM CRC's byte table: entry i is the CRC register after shifting byte i through. */
static const uint16_t crc_table[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7, 0x8108, 0x9129, 0xa14a, 0xb16b,
    0xc18c, 0xd1ad, 0xe1ce, 0xf1ef, 0x1231, 0x0210, 0x3273, 0x2252, 0x52b5, 0x4294, 0x72f7, 0x62d6,
    0x9339, 0x8318, 0xb37b, 0xa35a, 0xd3bd, 0xc39c, 0xf3ff, 0xe3de, 0x2462, 0x3443, 0x0420, 0x1401,
    0x64e6, 0x74c7, 0x44a4, 0x5485, 0xa56a, 0xb54b, 0x8528, 0x9509, 0xe5ee, 0xf5cf, 0xc5ac, 0xd58d,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76d7, 0x66f6, 0x5695, 0x46b4, 0xb75b, 0xa77a, 0x9719, 0x8738,
    0xf7df, 0xe7fe, 0xd79d, 0xc7bc, 0x48c4, 0x58e5, 0x6886, 0x78a7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xc9cc, 0xd9ed, 0xe98e, 0xf9af, 0x8948, 0x9969, 0xa90a, 0xb92b, 0x5af5, 0x4ad4, 0x7ab7, 0x6a96,
    0x1a71, 0x0a50, 0x3a33, 0x2a12, 0xdbfd, 0xcbdc, 0xfbbf, 0xeb9e, 0x9b79, 0x8b58, 0xbb3b, 0xab1a,
    0x6ca6, 0x7c87, 0x4ce4, 0x5cc5, 0x2c22, 0x3c03, 0x0c60, 0x1c41, 0xedae, 0xfd8f, 0xcdec, 0xddcd,
    0xad2a, 0xbd0b, 0x8d68, 0x9d49, 0x7e97, 0x6eb6, 0x5ed5, 0x4ef4, 0x3e13, 0x2e32, 0x1e51, 0x0e70,
    0xff9f, 0xefbe, 0xdfdd, 0xcffc, 0xbf1b, 0xaf3a, 0x9f59, 0x8f78, 0x9188, 0x81a9, 0xb1ca, 0xa1eb,
    0xd10c, 0xc12d, 0xf14e, 0xe16f, 0x1080, 0x00a1, 0x30c2, 0x20e3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83b9, 0x9398, 0xa3fb, 0xb3da, 0xc33d, 0xd31c, 0xe37f, 0xf35e, 0x02b1, 0x1290, 0x22f3, 0x32d2,
    0x4235, 0x5214, 0x6277, 0x7256, 0xb5ea, 0xa5cb, 0x95a8, 0x8589, 0xf56e, 0xe54f, 0xd52c, 0xc50d,
    0x34e2, 0x24c3, 0x14a0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405, 0xa7db, 0xb7fa, 0x8799, 0x97b8,
    0xe75f, 0xf77e, 0xc71d, 0xd73c, 0x26d3, 0x36f2, 0x0691, 0x16b0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xd94c, 0xc96d, 0xf90e, 0xe92f, 0x99c8, 0x89e9, 0xb98a, 0xa9ab, 0x5844, 0x4865, 0x7806, 0x6827,
    0x18c0, 0x08e1, 0x3882, 0x28a3, 0xcb7d, 0xdb5c, 0xeb3f, 0xfb1e, 0x8bf9, 0x9bd8, 0xabbb, 0xbb9a,
    0x4a75, 0x5a54, 0x6a37, 0x7a16, 0x0af1, 0x1ad0, 0x2ab3, 0x3a92, 0xfd2e, 0xed0f, 0xdd6c, 0xcd4d,
    0xbdaa, 0xad8b, 0x9de8, 0x8dc9, 0x7c26, 0x6c07, 0x5c64, 0x4c45, 0x3ca2, 0x2c83, 0x1ce0, 0x0cc1,
    0xef1f, 0xff3e, 0xcf5d, 0xdf7c, 0xaf9b, 0xbfba, 0x8fd9, 0x9ff8, 0x6e17, 0x7e36, 0x4e55, 0x5e74,
    0x2e93, 0x3eb2, 0x0ed1, 0x1ef0};

uint16_t sb_crc16(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++)
        crc = (uint16_t)(crc << 8) ^ crc_table[((crc >> 8) ^ p[i]) & 0xff];
    return crc;
}

unsigned sb_slot_of(const void *key, size_t len)
{
    const char *k = key;
    const char *open = memchr(k, '{', len);
    if (open) {
        size_t from = (size_t)(open - k) + 1;
        const char *close = memchr(k + from, '}', len - from);
        /* "{}" hashes the whole key: an empty tag would put every such key in one slot. */
        if (close && close > k + from)
            return sb_crc16(k + from, (size_t)(close - (k + from))) & (SB_SLOTS - 1);
    }
    return sb_crc16(k, len) & (SB_SLOTS - 1);
}

/* ---- CLUSTER SLOTS ----------------------------------------------------------------------------
 */

static bool host_ok(const char *s, size_t len)
{
    if (len > SB_SLOTS_HOST_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    }
    return true;
}

/* A node's index in m (added when new); SB_SLOT_NONE when it has no known endpoint; or -errno. */
static int node_index(struct sb_slot_map *m, const redisReply *n, const char *origin, unsigned *cap)
{
    if (n->type != REDIS_REPLY_ARRAY || n->elements < 2 ||
        n->element[0]->type != REDIS_REPLY_STRING || n->element[1]->type != REDIS_REPLY_INTEGER)
        return -EBADMSG;
    const char *host = n->element[0]->str;
    size_t hlen = n->element[0]->len;
    long long port = n->element[1]->integer;
    if (hlen == 1 && host[0] == '?')
        return SB_SLOT_NONE;
    if (hlen == 0) {
        host = origin;
        hlen = strlen(origin);
    }
    if (!host_ok(host, hlen) || port < 1 || port > 65535)
        return -EBADMSG;
    for (unsigned i = 0; i < m->nnodes; i++) {
        if (m->nodes[i].port == port && strlen(m->nodes[i].host) == hlen &&
            memcmp(m->nodes[i].host, host, hlen) == 0)
            return (int)i;
    }
    if (m->nnodes == SB_SLOTS_MAX_NODES)
        return -EMSGSIZE;
    if (m->nnodes == *cap) {
        unsigned ncap = *cap ? *cap * 2 : 8;
        struct sb_slot_node *nn = realloc(m->nodes, ncap * sizeof(*nn));
        if (!nn)
            return -ENOMEM;
        m->nodes = nn;
        *cap = ncap;
    }
    struct sb_slot_node *sn = &m->nodes[m->nnodes];
    memcpy(sn->host, host, hlen);
    sn->host[hlen] = '\0';
    sn->port = (uint16_t)port;
    return (int)m->nnodes++;
}

/* Slots already described by an earlier range of the reply. */
struct seen {
    uint64_t bits[SB_SLOTS / 64];
};

/* One entry: [start, end, master, replica...]. */
static int parse_range(struct sb_slot_map *m, const redisReply *e, const char *origin,
                       unsigned *cap, struct seen *seen)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
        e->element[0]->type != REDIS_REPLY_INTEGER || e->element[1]->type != REDIS_REPLY_INTEGER)
        return -EBADMSG;
    long long start = e->element[0]->integer, end = e->element[1]->integer;
    if (start < 0 || end >= SB_SLOTS || start > end)
        return -EBADMSG;
    if (e->elements - 3 > SB_SLOTS_MAX_REPLICAS)
        return -EMSGSIZE;
    for (long long s = start; s <= end; s++) {
        if (seen->bits[s / 64] & (1ull << (s % 64)))
            return -EBADMSG;
        seen->bits[s / 64] |= 1ull << (s % 64);
    }
    struct sb_slot_range *r = &m->ranges[m->nranges];
    memset(r, 0, sizeof(*r));
    r->start = (uint16_t)start;
    r->end = (uint16_t)end;
    int master = node_index(m, e->element[2], origin, cap);
    if (master < 0)
        return master;
    r->master = (uint16_t)master;
    for (size_t i = 3; i < e->elements; i++) {
        int rep = node_index(m, e->element[i], origin, cap);
        if (rep < 0)
            return rep;
        if (rep != SB_SLOT_NONE)
            r->replicas[r->nreplicas++] = (uint16_t)rep;
    }
    m->nranges++;
    for (long long s = start; s <= end; s++)
        m->owner[s] = (uint16_t)master;
    return 0;
}

static void map_empty(struct sb_slot_map *m)
{
    memset(m->owner, 0xff, sizeof(m->owner)); /* SB_SLOT_NONE everywhere */
    m->nodes = NULL;
    m->nnodes = 0;
    m->ranges = NULL;
    m->nranges = 0;
}

int sb_slot_map_parse(struct sb_slot_map *m, const struct redisReply *reply,
                      const char *origin_host)
{
    map_empty(m);
    if (reply->type != REDIS_REPLY_ARRAY)
        return -EBADMSG;
    /* Each range holds at least one slot, so a well-formed reply has at most 16384 entries. */
    if (reply->elements > SB_SLOTS)
        return -EMSGSIZE;
    if (reply->elements == 0)
        return 0;
    m->ranges = malloc(reply->elements * sizeof(*m->ranges));
    struct seen *seen = calloc(1, sizeof(*seen));
    unsigned cap = 0;
    int r = m->ranges && seen ? 0 : -ENOMEM;
    for (size_t i = 0; r == 0 && i < reply->elements; i++)
        r = parse_range(m, reply->element[i], origin_host ? origin_host : "", &cap, seen);
    free(seen);
    if (r < 0)
        sb_slot_map_destroy(m);
    return r;
}

void sb_slot_map_destroy(struct sb_slot_map *m)
{
    free(m->nodes);
    free(m->ranges);
    map_empty(m);
}

/* ---- MOVED and ASK ----------------------------------------------------------------------------
 */

/* Digits only, within 0..max. Returns the value or -1. */
static long parse_num(const char *s, size_t len, long max)
{
    if (len == 0 || len > 5)
        return -1;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= max ? v : -1;
}

int sb_slot_redirect_parse(const char *err, size_t len, struct sb_slot_redirect *out)
{
    size_t kw;
    if (len > 6 && memcmp(err, "MOVED ", 6) == 0)
        kw = 6;
    else if (len > 4 && memcmp(err, "ASK ", 4) == 0)
        kw = 4;
    else
        return -EINVAL;
    const char *p = err + kw, *end = err + len;
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    if (!sp)
        return -EINVAL;
    long slot = parse_num(p, (size_t)(sp - p), SB_SLOTS - 1);
    /* host:port; the host may be an IPv6 address, so the port follows the last colon. */
    const char *a = sp + 1, *colon = NULL;
    for (const char *q = a; q < end; q++) {
        if (*q == ':')
            colon = q;
    }
    if (slot < 0 || !colon)
        return -EINVAL;
    long port = parse_num(colon + 1, (size_t)(end - colon - 1), 65535);
    size_t hlen = (size_t)(colon - a);
    if (port < 1 || !host_ok(a, hlen))
        return -EINVAL;
    out->is_ask = kw == 4;
    out->slot = (uint16_t)slot;
    out->port = (uint16_t)port;
    memcpy(out->host, a, hlen);
    out->host[hlen] = '\0';
    return 0;
}
