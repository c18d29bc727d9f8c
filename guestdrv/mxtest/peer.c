// SPDX-License-Identifier: GPL-2.0
/*
 * peer.c - guest B's side: "mxtest peer" serves send requests from guest
 * A until a QUIT, and peer_ask is A's side of the request. Requests are
 * 64-byte messages matched with PEER_MATCH_CTRL on B's first endpoint.
 * Each SEND runs on a fresh endpoint of its own, so that a send A never
 * matches (a revoked receive) ends with that endpoint's close instead of
 * blocking the server.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include "mx.h"

int peer_ask(struct ep *e, uint64_t peer_nic, uint32_t op, uint64_t dest_nic, uint32_t dest_ep,
	     uint32_t len, uint64_t match, uint32_t seed, uint32_t tag, uint32_t delay_ms, uint32_t timeout_ms)
{
	struct peer_req *q = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (q == MAP_FAILED)
		return -errno;
	*q = (struct peer_req){.magic = PEER_MAGIC, .op = op, .dest_nic = dest_nic,
			       .dest_ep = dest_ep, .len = len, .match = match, .seed = seed,
			       .timeout_ms = timeout_ms, .tag = tag, .delay_ms = delay_ms};
	struct myrimx_reg r;
	int rc = mx_reg(e, q, PAGE, MYRIMX_ACCESS_SEND, 0, &r);
	if (rc == 0) {
		uint64_t cookie = 0x7065657200000000ULL | tag;
		rc = mx_send(e, r.id, r.generation, 0, sizeof(*q), peer_nic, 0, PEER_MATCH_CTRL, cookie);
		struct myrimx_event ev;
		if (rc == 0)
			rc = mx_wait_cookie(e, cookie, 60000, &ev);
		if (rc == 0 && ev.status != MYRIMX_WAIT_OK)
			rc = -EIO;
		mx_dereg(e, r.id, r.generation);
	}
	munmap(q, PAGE);
	return rc;
}

/* serve_send moves one request's bytes on a fresh endpoint. */
static void serve_send(int instance, const struct peer_req *q, uint8_t *buf, size_t bufsize, uint64_t *filled_seed)
{
	char name[64];
	snprintf(name, sizeof(name), "peer.send:%u", q->tag);
	v_begin(name);
	V.info_only = 1;
	if (q->len > bufsize) {
		v_fail("len %u > buffer %zu", q->len, bufsize);
		v_end();
		return;
	}
	if (*filled_seed != q->seed) {
		fill(buf, bufsize, q->seed);
		*filled_seed = q->seed;
	}
	if (q->delay_ms)
		usleep(q->delay_ms * 1000);
	struct ep e;
	if (ep_open(&e, instance) != 0) {
		v_end();
		return;
	}
	struct myrimx_reg r;
	int rc = mx_reg(&e, buf, q->len, MYRIMX_ACCESS_SEND, 0, &r);
	uint64_t t0 = now_ms();
	if (rc) {
		v_fail("REG %u bytes: %s", q->len, strerror(-rc));
	} else {
		uint64_t cookie = 0x5000000000000000ULL | q->tag;
		rc = mx_send(&e, r.id, r.generation, 0, q->len, q->dest_nic, (uint16_t)q->dest_ep, q->match, cookie);
		struct myrimx_event ev;
		if (rc)
			v_fail("SEND: %s", strerror(-rc));
		else if ((rc = mx_wait_cookie(&e, cookie, q->timeout_ms ? (int)q->timeout_ms : 60000, &ev)) != 0)
			v_fact("status=TIMEOUT closing=1");
		else
			v_fact("status=%s xfer=%u ms=%llu", status_name(ev.status), ev.xfer_len,
			       (unsigned long long)(now_ms() - t0));
	}
	v_fact("len=%u to_nic=%#llx to_ep=%u", q->len, (unsigned long long)q->dest_nic, q->dest_ep);
	ep_close(&e); /* an unmatched send completes ENDPOINT_CLOSED at A's side */
	v_end();
}

int cmd_peer(int argc, char **argv)
{
	int instance = 0;
	size_t bufsize = 64UL << 20;
	int max_s = 1800;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "-dev"))
			instance = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "-max-seconds"))
			max_s = atoi(argv[i + 1]);
	}
	struct ep ctl;
	v_begin("peer");
	if (ep_open(&ctl, instance) != 0)
		return v_end();
	printf("mxtest peer: nic %#llx endpoint %u\n", (unsigned long long)ctl.info.nic_id, ctl.info.endpoint);
	fflush(stdout);
	uint8_t *buf = map_anon(bufsize, 0);
	struct peer_req *q = map_anon(PAGE, 0);
	if (!buf || !q)
		return v_end();
	fill(buf, bufsize, 0); /* seed 0 ready: a request with it sends at once */
	uint64_t filled = 0;
	struct myrimx_reg r;
	int rc = mx_reg(&ctl, q, PAGE, MYRIMX_ACCESS_RECV, 0, &r);
	if (rc) {
		v_fail("REG control buffer: %s", strerror(-rc));
		return v_end();
	}
	uint64_t deadline = now_ms() + (uint64_t)max_s * 1000;
	unsigned served = 0;
	for (uint64_t n = 1;; n++) {
		memset(q, 0, sizeof(*q));
		rc = mx_recv(&ctl, r.id, r.generation, 0, sizeof(*q), PEER_MATCH_CTRL, ~0ULL, n);
		if (rc) {
			v_fail("RECV control: %s", strerror(-rc));
			break;
		}
		struct myrimx_event ev;
		uint64_t now = now_ms();
		if (now >= deadline || (rc = mx_wait_cookie(&ctl, n, (int)(deadline - now), &ev)) != 0) {
			v_fail("no QUIT within %d s (%s)", max_s, strerror(-rc));
			break;
		}
		if (ev.status != MYRIMX_WAIT_OK || q->magic != PEER_MAGIC) {
			v_fail("bad request: status %s magic %#x", status_name(ev.status), q->magic);
			break;
		}
		if (q->op == PEER_OP_QUIT)
			break;
		if (q->op == PEER_OP_SEND) {
			struct peer_req copy = *q;
			serve_send(instance, &copy, buf, bufsize, &filled);
			v_begin("peer");
			served++;
		}
	}
	mx_dereg(&ctl, r.id, r.generation);
	ep_close(&ctl);
	v_fact("served=%u", served);
	return v_end();
}
