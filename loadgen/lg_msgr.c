#include "loadgen/lg_msgr.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "proto/json.h"

#define MAX_TOKENS 64 /* a message has ~20; anything larger is not one of ours */

static const char hex[] = "0123456789abcdef";

ssize_t lg_msgr_user(char *out, size_t cap, uint32_t id)
{
    int n = snprintf(out, cap, "lg%u", id);
    return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}

ssize_t lg_msgr_path(char *out, size_t cap, const char *base, const char *token)
{
    int n =
        snprintf(out, cap, "%s%ctoken=%s&device=lg", base, strchr(base, '?') ? '&' : '?', token);
    return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}

static char *put_hex(char *o, uint64_t v, int digits)
{
    for (int i = digits - 1; i >= 0; i--) {
        o[i] = hex[v & 15];
        v >>= 4;
    }
    return o + digits;
}

/* Reads exactly digits lower-case hex digits. Returns 0 or -EBADMSG. */
static int get_hex(const char *p, int digits, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < digits; i++) {
        char ch = p[i];
        unsigned d;
        if (ch >= '0' && ch <= '9')
            d = (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            d = (unsigned)(ch - 'a' + 10);
        else
            return -EBADMSG;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

void lg_msgr_body(char *out, size_t size, const struct lg_msgr_stamp *s)
{
    char *o = out;
    *o++ = 'T';
    o = put_hex(o, s->t, 16);
    *o++ = 'N';
    o = put_hex(o, s->n, 16);
    *o++ = 'F';
    o = put_hex(o, s->from, 8);
    memset(o, '.', size - LG_MSGR_STAMP_LEN);
}

int lg_msgr_body_parse(const char *body, size_t len, struct lg_msgr_stamp *s)
{
    uint64_t from;
    if (len < LG_MSGR_STAMP_LEN || body[0] != 'T' || body[17] != 'N' || body[34] != 'F' ||
        get_hex(body + 1, 16, &s->t) < 0 || get_hex(body + 18, 16, &s->n) < 0 ||
        get_hex(body + 35, 8, &from) < 0)
        return -EBADMSG;
    s->from = (uint32_t)from;
    return 0;
}

ssize_t lg_msgr_client_id(char *out, size_t cap, const char *run, uint64_t n, uint64_t t)
{
    int k = snprintf(out, cap, "%s.%llx.%llx", run, (unsigned long long)n, (unsigned long long)t);
    return k < 0 || (size_t)k >= cap ? -ENOSPC : k;
}

ssize_t lg_msgr_send(char *out, size_t cap, const char *run, uint64_t n, uint64_t t, bool to_user,
                     const char *dest, const char *body, size_t body_len)
{
    char id[LG_MSGR_CLIENT_ID_MAX];
    if (lg_msgr_client_id(id, sizeof(id), run, n, t) < 0)
        return -ENOSPC;
    int head = snprintf(out, cap, "{\"type\":\"send\",\"id\":\"%s\",\"%s\":\"%s\",\"body\":\"", id,
                        to_user ? "to" : "conv", dest);
    if (head < 0 || (size_t)head + body_len + 2 >= cap)
        return -ENOSPC;
    memcpy(out + head, body, body_len);
    memcpy(out + (size_t)head + body_len, "\"}", 2);
    return (ssize_t)((size_t)head + body_len + 2);
}

ssize_t lg_msgr_conv_create(char *out, size_t cap, const char *id, const char *conv, uint32_t first,
                            uint32_t count, uint32_t skip)
{
    int n = conv ? snprintf(out, cap,
                            "{\"type\":\"conv_add\",\"id\":\"%s\",\"conv\":\"%s\",\"users\":[", id,
                            conv)
                 : snprintf(out, cap,
                            "{\"type\":\"conv_create\",\"id\":\"%s\",\"name\":\"%s\",\"members\":[",
                            id, id);
    if (n < 0 || (size_t)n >= cap)
        return -ENOSPC;
    size_t len = (size_t)n;
    bool any = false;
    for (uint32_t u = first; u < first + count; u++) {
        if (u == skip)
            continue;
        n = snprintf(out + len, cap - len, "%s\"lg%u\"", any ? "," : "", u);
        if (n < 0 || (size_t)n >= cap - len)
            return -ENOSPC;
        len += (size_t)n;
        any = true;
    }
    if (cap - len < 3)
        return -ENOSPC;
    memcpy(out + len, "]}", 3);
    return (ssize_t)(len + 2);
}

/* The string value after the first `"key":"` in p: its start and length (no escapes in ours). */
static const char *find_str(const char *p, size_t len, const char *key, size_t *vlen)
{
    char pat[32];
    int k = snprintf(pat, sizeof(pat), "\"%s\":\"", key);
    if (k < 0 || (size_t)k >= sizeof(pat))
        return NULL;
    const char *v = memmem(p, len, pat, (size_t)k);
    if (!v)
        return NULL;
    v += k;
    const char *e = memchr(v, '"', len - (size_t)(v - p));
    if (!e)
        return NULL;
    *vlen = (size_t)(e - v);
    return v;
}

static bool word_is(const char *v, size_t vlen, const char *word)
{
    return vlen == strlen(word) && memcmp(v, word, vlen) == 0;
}

enum lg_msgr_kind lg_msgr_kind(const char *p, size_t len)
{
    static const char pre[] = "{\"type\":\"";
    const char *v;
    size_t vlen;
    /* The server writes "type" first; the scan covers a server that does not. */
    if (len > sizeof(pre) && memcmp(p, pre, sizeof(pre) - 1) == 0) {
        v = p + sizeof(pre) - 1;
        const char *e = memchr(v, '"', len - (sizeof(pre) - 1));
        if (!e)
            return LG_MK_OTHER;
        vlen = (size_t)(e - v);
    } else if (!(v = find_str(p, len, "type", &vlen))) {
        return LG_MK_OTHER;
    }
    if (word_is(v, vlen, "message"))
        return LG_MK_MESSAGE;
    if (word_is(v, vlen, "ack"))
        return LG_MK_ACK;
    if (word_is(v, vlen, "conv"))
        return LG_MK_CONV;
    if (word_is(v, vlen, "error"))
        return LG_MK_ERROR;
    if (word_is(v, vlen, "welcome"))
        return LG_MK_WELCOME;
    if (word_is(v, vlen, "behind"))
        return LG_MK_BEHIND;
    return LG_MK_OTHER;
}

int lg_msgr_delivery(const char *p, size_t len, size_t body_size, struct lg_msgr_stamp *s)
{
    /* The usual case: the body of size bytes is the last member, `..."body":"<stamp>"}`. */
    if (len >= body_size + 10 && p[len - 1] == '}' && p[len - 2] == '"' &&
        memcmp(p + len - 2 - body_size - 8, "\"body\":\"", 8) == 0 &&
        lg_msgr_body_parse(p + len - 2 - body_size, body_size, s) == 0)
        return 1;
    if (lg_msgr_kind(p, len) != LG_MK_MESSAGE)
        return -EBADMSG;
    struct sb_json_tok toks[MAX_TOKENS];
    const struct sb_json_limits lim = {MAX_TOKENS, 8};
    if (sb_json_parse(p, len, &lim, toks) < 0)
        return -EBADMSG;
    int b = sb_json_get(p, toks, 0, "body");
    if (b < 0 || toks[b].type != SB_JSON_STRING || toks[b].escaped || toks[b].len != body_size)
        return 0;
    return lg_msgr_body_parse(p + toks[b].start, toks[b].len, s) == 0 ? 1 : 0;
}

int lg_msgr_client_id_time(const char *v, size_t vlen, const char *run, uint64_t *t)
{
    size_t rlen = strlen(run);
    if (vlen < rlen + 4 || memcmp(v, run, rlen) != 0 || v[rlen] != '.')
        return -EBADMSG;
    const char *dot = memrchr(v, '.', vlen);
    size_t digits = vlen - (size_t)(dot + 1 - v);
    if (dot == v + rlen || digits == 0 || digits > 16)
        return -EBADMSG;
    return get_hex(dot + 1, (int)digits, t);
}

int lg_msgr_ack(const char *p, size_t len, const char *run, uint64_t *t)
{
    size_t vlen;
    const char *v = find_str(p, len, "id", &vlen);
    return v ? lg_msgr_client_id_time(v, vlen, run, t) : -EBADMSG;
}

/* True for an id of the protocol's alphabet ([A-Za-z0-9_.@:-]): safe inside a JSON string. */
static bool is_id(const char *v, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char ch = v[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '@' || ch == ':' || ch == '-'))
            return false;
    }
    return len > 0;
}

int lg_msgr_conv(const char *p, size_t len, char *id, size_t idcap, char *conv, size_t convcap)
{
    size_t ilen, clen;
    const char *i = find_str(p, len, "id", &ilen);
    const char *c = find_str(p, len, "conv", &clen);
    /* The group's id goes back into our requests verbatim, so only a well-formed one is taken. */
    if (!i || !c || ilen >= idcap || clen >= convcap || !is_id(i, ilen) || !is_id(c, clen))
        return -EBADMSG;
    memcpy(id, i, ilen);
    id[ilen] = '\0';
    memcpy(conv, c, clen);
    conv[clen] = '\0';
    return 0;
}

void lg_msgr_error_text(const char *p, size_t len, char *out, size_t cap)
{
    size_t clen = 0, mlen = 0;
    const char *c = find_str(p, len, "code", &clen);
    const char *m = find_str(p, len, "message", &mlen);
    snprintf(out, cap, "%.*s: %.*s", c ? (int)clen : 1, c ? c : "?", m ? (int)mlen : 0, m ? m : "");
}
