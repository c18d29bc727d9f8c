/* SPDX-License-Identifier: GPL-2.0 */
/*
 * mx.h - helpers of mxtest, the guest test program of the myrimx zero-copy
 * driver (issue 12; zero-copy-design.md 6.10). One subcommand per
 * scenario; each prints one verdict line in the e2e result grammar
 * (guestdrv/result):
 *
 *   E2E-RESULT name=mx:<scenario> status=pass|fail|info detail=k=v ...
 *
 * with the guest-side facts the host asserts on: the driver's reason
 * counters (STATS), pattern checks, the device's audit counter read from
 * BAR0 (AUDIT_COUNT, before and after) and nr_foll_pin_acquired/released
 * from /proc/vmstat.
 */
#ifndef MXTEST_MX_H
#define MXTEST_MX_H

#include <stdint.h>
#include <stddef.h>
#include <stdarg.h>
#include <sys/types.h>
#include <myrimx_abi.h>
#include <myrimx_ioctl.h>

#define PAGE 4096UL

/* An open endpoint: one fd of /dev/myrimx<N>. */
struct ep {
	int fd;
	int instance;
	struct myrimx_info info;
	const volatile uint32_t *gen_map;
	size_t gen_map_size;
};

/* The verdict being built by the running scenario. */
struct verdict {
	char name[64];
	char detail[4096];
	int failed;
	int info_only;
};

extern struct verdict V;
extern int verbose;

void v_begin(const char *name);
void v_fact(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void v_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int v_end(void); /* prints the line; returns the exit status */
#define CHECK(cond, ...) do { if (!(cond)) v_fail(__VA_ARGS__); } while (0)
void dbg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* endpoints */
int ep_open(struct ep *e, int instance);
void ep_close(struct ep *e);
int find_instance(int audit_mode); /* first /dev/myrimxN whose device audits in that mode, -1 if none */
int mx_reg(struct ep *e, void *va, size_t len, uint32_t access, uint32_t flags, struct myrimx_reg *out);
int mx_dereg(struct ep *e, uint32_t id, uint32_t gen);
int mx_send(struct ep *e, uint32_t id, uint32_t gen, uint64_t off, uint32_t len,
	    uint64_t nic, uint16_t dest_ep, uint64_t match, uint64_t cookie);
int mx_recv(struct ep *e, uint32_t id, uint32_t gen, uint64_t off, uint32_t len,
	    uint64_t match, uint64_t mask, uint64_t cookie);
/* _f: with MYRIMX_XFER_* flags (UNCHECKED: the device alone judges the handle) */
int mx_send_f(struct ep *e, uint32_t id, uint32_t gen, uint64_t off, uint32_t len,
	      uint64_t nic, uint16_t dest_ep, uint64_t match, uint64_t cookie, uint32_t flags);
int mx_recv_f(struct ep *e, uint32_t id, uint32_t gen, uint64_t off, uint32_t len,
	      uint64_t match, uint64_t mask, uint64_t cookie, uint32_t flags);
/* Waits (up to timeout_ms) for the completion carrying cookie; other
 * completions are dropped with a log line. 0 and *ev filled, or -1. */
int mx_wait_cookie(struct ep *e, uint64_t cookie, int timeout_ms, struct myrimx_event *ev);
int mx_query(struct ep *e, uint32_t id, uint64_t *gpas, uint32_t max, struct myrimx_query_reg *q);
int mx_stats(struct ep *e, uint32_t scope, struct myrimx_stats *s);
int mx_stats_global(struct myrimx_stats *s); /* opens instance 0 for the call */
int mx_bug(struct ep *e, uint32_t bugs);
int mx_gen_valid(struct ep *e, uint32_t id, uint32_t gen);

/* device registers from user space (sysfs resource0) */
long audit_count(int instance);      /* AUDIT_COUNT, -1 if unreadable */
int bar_poke(int instance, uint32_t off, uint32_t val); /* a 4-byte store into BAR0 */

/* memory */
void *map_anon(size_t len, int shared);
void fill(void *p, size_t len, uint64_t seed);
/* first bad byte offset, or -1 if p holds seed's pattern */
long check(const void *p, size_t len, uint64_t seed);
long check_zero(const void *p, size_t len);
uint64_t va_to_gpa(const void *va); /* 0 if not present */
void vmstat_pins(uint64_t *acq, uint64_t *rel);
uint64_t now_ms(void);
const char *reason_name(int r);
const char *status_name(int s);

/* scenario bookkeeping: audit and pins before/after, reason counters */
struct snap {
	long audit;
	uint64_t pin_acq, pin_rel;
};
void snap_take(struct snap *s, int instance);
/* After teardown: pins balanced (vmstat and the module's pins_held), the
 * audit delta as a fact, the reason counters of the module since load. */
void snap_finish(const struct snap *before, int instance);
uint64_t g_inv(int reason);   /* global invalidations[reason] since module load */
uint64_t g_cb(int reason);    /* global callbacks[reason] */

/* peer protocol (guest B runs "mxtest peer") */
#define PEER_MATCH_CTRL 0x4d58435452ULL /* "MXCTR" */
#define PEER_MAGIC 0x4d585045u
#define PEER_OP_SEND 1
#define PEER_OP_QUIT 2
struct peer_req {
	uint32_t magic, op;
	uint64_t dest_nic;
	uint32_t dest_ep, len;
	uint64_t match;
	uint32_t seed, timeout_ms;
	uint32_t tag, delay_ms;
	uint8_t pad[16];
};
/* Asks the peer (peer_nic, endpoint 0), through e, to send len bytes of
 * seed's pattern to (dest_nic, dest_ep) with match; returns once the peer
 * has the request. */
int peer_ask(struct ep *e, uint64_t peer_nic, uint32_t op, uint64_t dest_nic, uint32_t dest_ep,
	     uint32_t len, uint64_t match, uint32_t seed, uint32_t tag, uint32_t delay_ms, uint32_t timeout_ms);
int cmd_peer(int argc, char **argv);

/* registration cache (rcache.c) */
struct rcache;
struct rcache *rcache_new(struct ep *e, int use_gen_map);
/* Returns the cached or new registration covering [va, va+len). *hit says
 * whether the cache answered. */
int rcache_get(struct rcache *c, void *va, size_t len, uint32_t access, uint32_t *id, uint32_t *gen, int *hit);
void rcache_free(struct rcache *c); /* DEREGs what it holds */
uint64_t rcache_stale_dropped(struct rcache *c);

#endif
