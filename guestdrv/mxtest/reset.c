// SPDX-License-Identifier: GPL-2.0
/*
 * reset.c - scenario 21 of zero-copy-design.md 6.10: QEMU takes guest RAM
 * away (a reboot: DEVICE_RESET, then DMA_UNMAP of all RAM) while guest A
 * holds live registrations. Neither side can see the reset coming, so the
 * host drives it:
 *
 *   A: mxtest -peer-nic B reset-hold     registers a receive buffer, posts
 *        a RECV on it, asks B for a SEND to its endpoint, prints
 *        mx:21-ready (the host then resets A's QEMU) and waits.
 *   B: mxtest reset-peer                 serves that one request on
 *        endpoint 0 after "mxtest peer" has quit, and prints the SEND's
 *        completion as mx:21-peer-send.
 *
 * B's SEND carries a match A's receive does not take, so it waits at A's
 * endpoint (an unexpected message, device/myrimx/README.md) until the
 * reset ends it: the peer's operation must complete (ENDPOINT_CLOSED), not
 * hang and not move a byte into RAM QEMU no longer maps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "mx.h"
#include "scenarios.h"

#define M21_RECV 0x6d78000000002100ULL /* A's receive */
#define M21_SEND 0x6d78000000002101ULL /* B's send: unmatched at A */
#define L21 (16 * PAGE)

/* s_reset_hold is A's side; it returns only if the reset never came. */
int s_reset_hold(int wait_s)
{
	struct ep e;
	struct myrimx_reg r;
	struct myrimx_event ev;
	v_begin("21-dma-unmap");
	if (!O.peer_nic) {
		v_fail("no -peer-nic");
		return v_end();
	}
	if (ep_open(&e, O.dev) != 0)
		return v_end();
	uint8_t *buf = map_anon(L21, 0);
	int rc = buf ? mx_reg(&e, buf, L21, MYRIMX_ACCESS_RECV, 0, &r) : -ENOMEM;
	if (rc == 0)
		rc = mx_recv(&e, r.id, r.generation, 0, L21, M21_RECV, ~0ULL, 21);
	if (rc) {
		v_fail("REG and RECV of %lu bytes: %s", L21, strerror(-rc));
		ep_close(&e);
		return v_end();
	}
	/* B's reset-peer opens endpoint 0 once its "mxtest peer" has quit:
	 * until then the request completes with an error; ask again. */
	uint64_t deadline = now_ms() + 120000;
	int tries = 0;
	for (;;) {
		tries++;
		rc = peer_ask(&e, O.peer_nic, PEER_OP_SEND, e.info.nic_id, e.info.endpoint, L21, M21_SEND,
			      21, 21, 0, (uint32_t)wait_s * 1000);
		if (rc == 0 || now_ms() >= deadline)
			break;
		usleep(500000);
	}
	if (rc) {
		v_fail("the peer took no request in 120 s (%d tries): %s", tries, strerror(-rc));
		mx_dereg(&e, r.id, r.generation);
		ep_close(&e);
		return v_end();
	}
	/* B registers and posts its SEND right after taking the request. */
	sleep(3);
	v_begin("21-ready");
	V.info_only = 1;
	v_fact("ep=%u region=%u gen=%u len=%lu gpa0=%#llx tries=%d audit_before=%ld", e.info.endpoint, r.id,
	       r.generation, L21, (unsigned long long)va_to_gpa(buf), tries, audit_count(O.dev));
	v_end();

	/* The host resets this guest now: nothing below runs if it does. */
	v_begin("21-dma-unmap");
	rc = mx_wait_cookie(&e, 21, wait_s * 1000, &ev);
	if (rc == 0)
		v_fail("the RECV completed (%s) but no reset came", status_name(ev.status));
	else
		v_fail("no reset within %d s", wait_s);
	mx_dereg(&e, r.id, r.generation);
	ep_close(&e);
	return v_end();
}

/* s_reset_peer is B's side: one request on endpoint 0, one SEND. */
int s_reset_peer(int wait_s)
{
	struct ep e;
	struct myrimx_reg cr, sr;
	struct myrimx_event ev;
	v_begin("21-peer-send");
	V.info_only = 1; /* the host judges the status against A's reset */
	if (ep_open(&e, O.dev) != 0)
		return v_end();
	if (e.info.endpoint != 0) {
		v_fail("opened endpoint %u, A asks endpoint 0", e.info.endpoint);
		ep_close(&e);
		return v_end();
	}
	struct peer_req *q = map_anon(PAGE, 0);
	int rc = q ? mx_reg(&e, q, PAGE, MYRIMX_ACCESS_RECV, 0, &cr) : -ENOMEM;
	if (rc == 0)
		rc = mx_recv(&e, cr.id, cr.generation, 0, sizeof(*q), PEER_MATCH_CTRL, ~0ULL, 1);
	if (rc == 0 && (rc = mx_wait_cookie(&e, 1, wait_s * 1000, &ev)) == 0 &&
	    (ev.status != MYRIMX_WAIT_OK || q->magic != PEER_MAGIC || q->op != PEER_OP_SEND))
		rc = -EPROTO;
	if (rc) {
		v_fail("no request from A in %d s: %s", wait_s, strerror(-rc));
		ep_close(&e);
		return v_end();
	}
	struct peer_req req = *q;
	uint8_t *buf = req.len <= (64UL << 20) ? map_anon(req.len, 0) : NULL;
	if (!buf) {
		v_fail("request of %u bytes", req.len);
		ep_close(&e);
		return v_end();
	}
	fill(buf, req.len, req.seed);
	rc = mx_reg(&e, buf, req.len, MYRIMX_ACCESS_SEND, 0, &sr);
	uint64_t t0 = now_ms();
	if (rc == 0)
		rc = mx_send(&e, sr.id, sr.generation, 0, req.len, req.dest_nic, (uint16_t)req.dest_ep, req.match, 2);
	if (rc)
		v_fail("REG and SEND: %s", strerror(-rc));
	else if (mx_wait_cookie(&e, 2, req.timeout_ms ? (int)req.timeout_ms : wait_s * 1000, &ev) != 0)
		v_fail("status=TIMEOUT: the SEND did not complete in %u ms", req.timeout_ms);
	else
		v_fact("status=%s xfer=%u ms=%llu", status_name(ev.status), ev.xfer_len,
		       (unsigned long long)(now_ms() - t0));
	v_fact("len=%u to_nic=%#llx to_ep=%u", req.len, (unsigned long long)req.dest_nic, req.dest_ep);
	ep_close(&e); /* drops both registrations */
	return v_end();
}
