/*
 * Hooks that drive a client without a socket, for white-box tests and benchmarks of what the
 * client does per frame. Not part of the public API (hidden in the shared library).
 */
#ifndef SB_SDK_HOOKS_H
#define SB_SDK_HOOKS_H

#include <stddef.h>
#include <stdint.h>

#include "switchboard.h"

/* Puts c in the connected state (after WELCOME) with no socket: output only accumulates. */
void sb__client_hook_ready(struct sb_client *c);

/* Hands c bytes as if the server sent them on raw TCP (whole frames); callbacks run. */
void sb__client_hook_feed(struct sb_client *c, const uint8_t *bytes, size_t len);

/* Copies up to cap bytes of what c would have written (out may be NULL), then drops it all. */
size_t sb__client_hook_output(struct sb_client *c, uint8_t *out, size_t cap);

/* Runs the timers as if advance_ms more had passed (gap grace, rate-limit hold). */
void sb__client_hook_tick(struct sb_client *c, uint64_t advance_ms);

#endif
