// SPDX-License-Identifier: GPL-2.0
/*
 * scenarios.c - the zero-copy scenarios of zero-copy-design.md 6.10, one
 * function each, in the style of the kernel's hmm-tests.c: buffers from
 * mmap, fill patterns checked at both ends, a racing thread, fork, and the
 * driver's counters to say what the kernel did. Every scenario opens its
 * own endpoints and closes them, then snap_finish checks that every pin
 * was released and prints the reason counters and the device's audit
 * count delta (the host checks the same count on the control socket).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include "mx.h"
#include "scenarios.h"

struct opts O;

#define M(n) (0x6d78000000000000ULL | (uint64_t)(n))

/* local_send sends len bytes of seed's pattern from a fresh endpoint of
 * the same device to (rx's nic, rx's endpoint) with match and returns the
 * send's completion status (or -errno). */
static int local_send_ex(int instance, struct ep *rx, uint32_t len, uint64_t match, uint64_t seed, uint32_t *xfer,
			 volatile int *posted);

static int local_send(int instance, struct ep *rx, uint32_t len, uint64_t match, uint64_t seed, uint32_t *xfer)
{
	return local_send_ex(instance, rx, len, match, seed, xfer, NULL);
}

/* posted, if not NULL, is set once the SEND is on the device's ring. */
static int local_send_ex(int instance, struct ep *rx, uint32_t len, uint64_t match, uint64_t seed, uint32_t *xfer,
			 volatile int *posted)
{
	struct ep tx;
	int rc;
	if (ep_open(&tx, instance) != 0)
		return -ENODEV;
	void *b = map_anon(len, 0);
	if (!b) {
		ep_close(&tx);
		return -ENOMEM;
	}
	fill(b, len, seed);
	struct myrimx_reg r;
	rc = mx_reg(&tx, b, len, MYRIMX_ACCESS_SEND, 0, &r);
	if (rc == 0) {
		uint64_t cookie = 0x7478000000000000ULL | match;
		rc = mx_send(&tx, r.id, r.generation, 0, len, rx->info.nic_id, (uint16_t)rx->info.endpoint, match, cookie);
		if (posted)
			*posted = 1;
		struct myrimx_event ev;
		if (rc == 0 && (rc = mx_wait_cookie(&tx, cookie, 60000, &ev)) == 0) {
			rc = (int)ev.status;
			if (xfer)
				*xfer = ev.xfer_len;
		}
		mx_dereg(&tx, r.id, r.generation);
	}
	ep_close(&tx);
	munmap(b, len);
	return rc;
}

static int wait_status(struct ep *e, uint64_t cookie, int ms)
{
	struct myrimx_event ev;
	int rc = mx_wait_cookie(e, cookie, ms, &ev);
	return rc ? rc : (int)ev.status;
}

static const char *st(int s) { return s < 0 ? strerror(-s) : status_name(s); }

static void gpas_of(struct ep *e, uint32_t id, uint64_t *g, uint32_t n)
{
	struct myrimx_query_reg q;
	memset(g, 0, n * sizeof(*g));
	if (mx_query(e, id, g, n, &q) != 0)
		v_fail("QUERY_REG %u: %s", id, strerror(errno));
}

/* 1: munmap of a buffer with a posted receive. */
int s_munmap(void)
{
	struct snap s;
	struct ep rx;
	size_t L = 64 << 10;
	v_begin("01-munmap");
	snap_take(&s, O.dev);
	if (ep_open(&rx, O.dev) != 0)
		return v_end();
	uint8_t *p = map_anon(L, 0);
	fill(p, L, 1);
	struct myrimx_reg r;
	int rc = mx_reg(&rx, p, L, MYRIMX_ACCESS_RECV, 0, &r);
	CHECK(rc == 0, "REG: %s", strerror(-rc));
	rc = mx_recv(&rx, r.id, r.generation, 0, L, M(1), ~0ULL, 1);
	CHECK(rc == 0, "RECV: %s", strerror(-rc));
	munmap(p, L);
	/* The notifier revoked the registration before munmap returned. */
	int valid = mx_gen_valid(&rx, r.id, r.generation);
	CHECK(valid == 0, "gen map still valid after munmap returned (%d)", valid);
	int ws = wait_status(&rx, 1, 10000);
	v_fact("posted_recv=%s", st(ws));
	CHECK(ws == MYRIMX_WAIT_REGION_INVALIDATED, "posted RECV completed %s, want REGION_INVALIDATED", st(ws));
	rc = mx_recv(&rx, r.id, r.generation, 0, L, M(1), ~0ULL, 2);
	v_fact("old_handle=%s", rc ? strerror(-rc) : "accepted");
	CHECK(rc == -ESTALE, "RECV with the old handle: %s, want ESTALE", rc ? strerror(-rc) : "accepted");
	if (rc == 0)
		v_fact("old_handle_completion=%s", st(wait_status(&rx, 2, 10000)));
	/* The same handle past the driver's check: the device refuses it. */
	rc = mx_recv_f(&rx, r.id, r.generation, 0, L, M(1), ~0ULL, 3, MYRIMX_XFER_UNCHECKED);
	int dev = rc ? rc : wait_status(&rx, 3, 10000);
	v_fact("old_handle_device=%s", st(dev));
	CHECK(dev == MYRIMX_WAIT_BAD_RDMAWIN || dev == MYRIMX_WAIT_REGION_INVALIDATED,
	      "the device took the revoked handle: %s", st(dev));
	mx_dereg(&rx, r.id, r.generation);
	ep_close(&rx);
	snap_finish(&s, O.dev);
	CHECK(g_inv(MYRIMX_REASON_UNMAP) >= 1, "no UNMAP invalidation counted");
	return v_end();
}

/* 2: mremap move, shrink and MREMAP_DONTUNMAP. */
int s_mremap(void)
{
	struct snap s;
	struct ep e;
	const uint32_t n = 16;
	size_t L = n * PAGE;
	uint64_t before[16], after[16];
	v_begin("02-mremap");
	snap_take(&s, O.dev);
	if (ep_open(&e, O.dev) != 0)
		return v_end();
	const char *variant[] = {"move", "shrink", "dontunmap"};
	for (int k = 0; k < 3; k++) {
		uint8_t *p = map_anon(L, 0);
		uint8_t *q = NULL;
		fill(p, L, 20 + k);
		struct myrimx_reg r, r2;
		int rc = mx_reg(&e, p, L, MYRIMX_ACCESS_SEND, 0, &r);
		CHECK(rc == 0, "%s: REG: %s", variant[k], strerror(-rc));
		gpas_of(&e, r.id, before, n);
		uint64_t inv0 = g_inv(MYRIMX_REASON_UNMAP);
		if (k == 0) {
			uint8_t *dst = mmap(NULL, L, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			q = mremap(p, L, L, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
		} else if (k == 1) {
			q = mremap(p, L, L / 2, 0);
		} else {
			q = mremap(p, L, L, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
		}
		if (q == MAP_FAILED) {
			v_fail("%s: mremap: %s", variant[k], strerror(errno));
			continue;
		}
		int valid = mx_gen_valid(&e, r.id, r.generation);
		uint64_t inv = g_inv(MYRIMX_REASON_UNMAP) - inv0;
		v_fact("%s:unmap_inv=%llu", variant[k], (unsigned long long)inv);
		CHECK(valid == 0, "%s: registration still valid after mremap", variant[k]);
		CHECK(inv >= 1, "%s: no UNMAP invalidation", variant[k]);
		mx_dereg(&e, r.id, r.generation);
		size_t keep = k == 1 ? L / 2 : L;
		long bad = check(q, keep, 20 + k);
		CHECK(bad < 0, "%s: pattern at the new VA broken at %ld", variant[k], bad);
		rc = mx_reg(&e, q, keep, MYRIMX_ACCESS_SEND, 0, &r2);
		CHECK(rc == 0, "%s: re-REG at the new VA: %s", variant[k], strerror(-rc));
		if (rc == 0) {
			gpas_of(&e, r2.id, after, keep / PAGE);
			int same = 1;
			for (uint32_t i = 0; i < keep / PAGE; i++)
				same &= before[i] == after[i] && before[i] != 0;
			v_fact("%s:same_gpas=%d", variant[k], same);
			CHECK(same, "%s: the pages moved (page tables should have)", variant[k]);
			mx_dereg(&e, r2.id, r2.generation);
		}
		if (k == 2) {
			long nz = check_zero(p, L); /* the old range of DONTUNMAP is empty */
			CHECK(nz < 0, "dontunmap: old range not empty at %ld", nz);
			munmap(p, L);
		}
		munmap(q, keep);
	}
	ep_close(&e);
	snap_finish(&s, O.dev);
	return v_end();
}

/* 3: mmap(MAP_FIXED) over a registered buffer. */
int s_mapfixed(void)
{
	struct snap s;
	struct ep e;
	const uint32_t n = 16;
	size_t L = n * PAGE;
	uint64_t before[16];
	v_begin("03-map-fixed");
	snap_take(&s, O.dev);
	if (ep_open(&e, O.dev) != 0)
		return v_end();
	uint8_t *p = map_anon(L, 0);
	fill(p, L, 3);
	struct myrimx_reg r;
	int rc = mx_reg(&e, p, L, MYRIMX_ACCESS_RECV, 0, &r);
	CHECK(rc == 0, "REG: %s", strerror(-rc));
	gpas_of(&e, r.id, before, n);
	uint8_t *q = mmap(p, L, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	CHECK(q == p, "mmap MAP_FIXED: %s", strerror(errno));
	CHECK(mx_gen_valid(&e, r.id, r.generation) == 0, "registration still valid after MAP_FIXED");
	long nz = check_zero(q, L);
	CHECK(nz < 0, "the new mapping is not zero at %ld", nz);
	int moved = 0;
	for (uint32_t i = 0; i < n; i++) {
		q[i * PAGE] = 1;
		moved += va_to_gpa(q + i * PAGE) != before[i];
	}
	/* Not asserted: once the notifier unpinned them the old frames are
	 * free, and the page allocator may hand one straight back to this
	 * fault (seen: 15/16). What matters is that the registration is gone
	 * and the new mapping is new memory (zero above). */
	v_fact("new_gpas=%d/%u", moved, n);
	mx_dereg(&e, r.id, r.generation);
	munmap(q, L);
	ep_close(&e);
	snap_finish(&s, O.dev);
	CHECK(g_inv(MYRIMX_REASON_UNMAP) >= 1, "no UNMAP invalidation counted");
	return v_end();
}

/* 4: MADV_DONTNEED of one page inside a 16-page registration. */
int s_dontneed(void)
{
	struct snap s;
	struct ep e;
	const uint32_t n = 16;
	size_t L = n * PAGE;
	uint64_t before[16];
	v_begin("04-dontneed");
	snap_take(&s, O.dev);
	if (ep_open(&e, O.dev) != 0)
		return v_end();
	uint8_t *p = map_anon(L, 0);
	fill(p, L, 4);
	struct myrimx_reg r;
	int rc = mx_reg(&e, p, L, MYRIMX_ACCESS_RECV | MYRIMX_ACCESS_SEND, 0, &r);
	CHECK(rc == 0, "REG: %s", strerror(-rc));
	gpas_of(&e, r.id, before, n);
	CHECK(madvise(p + 5 * PAGE, PAGE, MADV_DONTNEED) == 0, "madvise: %s", strerror(errno));
	CHECK(mx_gen_valid(&e, r.id, r.generation) == 0, "the whole registration must be revoked");
	CHECK(check_zero(p + 5 * PAGE, PAGE) < 0, "page 5 not discarded");
	CHECK(check(p, 5 * PAGE, 4) < 0, "pages 0-4 changed");
	int same_others = 1;
	for (uint32_t i = 0; i < n; i++)
		if (i != 5)
			same_others &= va_to_gpa(p + i * PAGE) == before[i];
	uint64_t g5 = va_to_gpa(p + 5 * PAGE);
	v_fact("page5_gpa_changed=%d others_same=%d", g5 != before[5], same_others);
	CHECK(same_others, "pages other than 5 moved");
	mx_dereg(&e, r.id, r.generation);
	munmap(p, L);
	ep_close(&e);
	snap_finish(&s, O.dev);
	CHECK(g_inv(MYRIMX_REASON_CLEAR) >= 1, "no CLEAR invalidation counted");
	return v_end();
}

/* 5: MADV_FREE and MADV_PAGEOUT: spurious invalidations of pinned pages. */
int s_free_pageout(void)
{
	struct snap s;
	struct ep e;
	const uint32_t n = 16;
	size_t L = n * PAGE;
	uint64_t before[16], after[16];
	v_begin("05-free-pageout");
	snap_take(&s, O.dev);
	if (ep_open(&e, O.dev) != 0)
		return v_end();
	const int advice[] = {MADV_FREE, MADV_PAGEOUT};
	const char *names[] = {"free", "pageout"};
	for (int k = 0; k < 2; k++) {
		uint8_t *p = map_anon(L, 0);
		fill(p, L, 50 + k);
		struct myrimx_reg r, r2;
		int rc = mx_reg(&e, p, L, MYRIMX_ACCESS_SEND, 0, &r);
		CHECK(rc == 0, "%s: REG: %s", names[k], strerror(-rc));
		gpas_of(&e, r.id, before, n);
		uint64_t c0 = g_inv(MYRIMX_REASON_CLEAR);
		rc = madvise(p, L, advice[k]);
		CHECK(rc == 0, "%s: madvise: %s", names[k], strerror(errno));
		int valid = mx_gen_valid(&e, r.id, r.generation);
		uint64_t c = g_inv(MYRIMX_REASON_CLEAR) - c0;
		v_fact("%s:clear_inv=%llu still_valid=%d", names[k], (unsigned long long)c, valid);
		/* Either the notifier revoked it (CLEAR) or nothing happened. */
		CHECK((valid == 0 && c >= 1) || (valid == 1 && c == 0), "%s: valid=%d with %llu CLEAR invalidations",
		      names[k], valid, (unsigned long long)c);
		mx_dereg(&e, r.id, r.generation);
		rc = mx_reg(&e, p, L, MYRIMX_ACCESS_SEND, 0, &r2);
		CHECK(rc == 0, "%s: re-REG: %s", names[k], strerror(-rc));
		if (rc == 0) {
			gpas_of(&e, r2.id, after, n);
			int same = !memcmp(before, after, sizeof(before));
			long bad = check(p, L, 50 + k);
			v_fact("%s:same_gpas=%d pattern_kept=%d", names[k], same, bad < 0);
			/* Once the callback unpinned them, reclaim may take lazily
			 * freed pages (their content goes too): legal, not a stale
			 * registration. Kept pages must keep their frames. */
			CHECK(same || bad >= 0, "%s: pages moved with their content", names[k]);
			mx_dereg(&e, r2.id, r2.generation);
		}
		munmap(p, L);
	}
	ep_close(&e);
	snap_finish(&s, O.dev);
	return v_end();
}

/* 6: mprotect(PROT_READ) of a receive buffer. */
int s_mprotect(void)
{
	struct snap s;
	struct ep e;
	size_t L = 16 * PAGE;
	v_begin("06-mprotect");
	snap_take(&s, O.dev);
	if (ep_open(&e, O.dev) != 0)
		return v_end();
	uint8_t *p = map_anon(L, 0);
	memset(p, 0, L);
	struct myrimx_reg r, r2;
	int rc = mx_reg(&e, p, L, MYRIMX_ACCESS_RECV, 0, &r);
	CHECK(rc == 0, "REG: %s", strerror(-rc));
	CHECK(mprotect(p, L, PROT_READ) == 0, "mprotect: %s", strerror(errno));
	CHECK(mx_gen_valid(&e, r.id, r.generation) == 0, "registration still valid after mprotect(PROT_READ)");
	rc = mx_recv(&e, r.id, r.generation, 0, L, M(6), ~0ULL, 1);
	v_fact("old_handle=%s", rc ? strerror(-rc) : "accepted");
	CHECK(rc != 0, "RECV with the revoked handle was accepted");
	rc = mx_reg(&e, p, L, MYRIMX_ACCESS_RECV, 0, &r2);
	v_fact("reg_readonly=%s", rc ? strerror(-rc) : "accepted");
	CHECK(rc != 0, "RECV registration of a read-only buffer accepted");
	if (rc == 0)
		mx_dereg(&e, r2.id, r2.generation);
	mx_dereg(&e, r.id, r.generation);
	CHECK(mprotect(p, L, PROT_READ | PROT_WRITE) == 0, "mprotect RW: %s", strerror(errno));
	rc = mx_reg(&e, p, L, MYRIMX_ACCESS_RECV, 0, &r2);
	CHECK(rc == 0, "re-REG after PROT_READ|PROT_WRITE: %s", strerror(-rc));
	if (rc == 0) {
		rc = mx_recv(&e, r2.id, r2.generation, 0, L, M(6), ~0ULL, 2);
		int ss = local_send(O.dev, &e, L, M(6), 6, NULL);
		int rs = wait_status(&e, 2, 10000);
		long bad = check(p, L, 6);
		v_fact("send=%s recv=%s pattern=%s", st(ss), st(rs), bad < 0 ? "ok" : "bad");
		CHECK(ss == 0 && rs == 0 && bad < 0, "data after re-registration: send %s recv %s bad at %ld", st(ss), st(rs), bad);
		mx_dereg(&e, r2.id, r2.generation);
	}
	munmap(p, L);
	ep_close(&e);
	snap_finish(&s, O.dev);
	CHECK(g_inv(MYRIMX_REASON_PROTECTION_VMA) >= 1, "no PROTECTION_VMA invalidation counted");
	return v_end();
}

/* 7: fork with a registered private (COW) buffer, then a shared one. */
int s_fork(void)
{
	struct snap s;
	struct ep e;
	const uint32_t n = 16;
	size_t L = n * PAGE;
	uint64_t before[16];
	int rc;
	v_begin("07-fork");
	snap_take(&s, O.dev);
	if (ep_open(&e, O.dev) != 0)
		return v_end();
	for (int shared = 0; shared < 2; shared++) {
		const char *k = shared ? "shared" : "private";
		uint8_t *p = map_anon(L, shared);
		fill(p, L, 70 + shared);
		struct myrimx_reg r;
		rc = mx_reg(&e, p, L, MYRIMX_ACCESS_RECV | MYRIMX_ACCESS_SEND, 0, &r);
		CHECK(rc == 0, "%s: REG: %s", k, strerror(-rc));
		gpas_of(&e, r.id, before, n);
		uint64_t pp0 = g_cb(MYRIMX_REASON_PROTECTION_PAGE);
		fflush(stdout);
		pid_t pid = fork();
		if (pid == 0) {
			/* The child's ioctls on the inherited fd are refused. */
			struct myrimx_reg cr;
			int crc = mx_reg(&e, p, L, MYRIMX_ACCESS_SEND, 0, &cr);
			fill(p, L, 90); /* the child's write: a COW copy or the shared page */
			_exit(crc == -EIO ? 0 : 10 + (crc < 0 ? -crc : 99) % 100);
		}
		int status = 0;
		waitpid(pid, &status, 0);
		int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
		v_fact("%s:child_reg=%s", k, code == 0 ? "EIO" : "not-refused");
		CHECK(code == 0, "%s: the child's REG on the inherited fd was not refused with EIO (exit %d)", k, code);
		uint64_t pp = g_cb(MYRIMX_REASON_PROTECTION_PAGE) - pp0;
		int valid = mx_gen_valid(&e, r.id, r.generation);
		v_fact("%s:protection_page_callbacks=%llu still_valid=%d", k, (unsigned long long)pp, valid);
		if (!shared) {
			CHECK(pp >= 1, "private: fork gave no PROTECTION_PAGE callback");
			CHECK(check(p, L, 70) < 0, "private: the child's write reached the parent");
			fill(p, L, 71); /* the parent writes: no COW away from the pinned pages */
			int same = 1;
			for (uint32_t i = 0; i < n; i++)
				same &= va_to_gpa(p + i * PAGE) == before[i];
			v_fact("private:parent_gpas_same=%d", same);
			CHECK(same, "private: the parent's pages moved (the device would write the child's)");
		} else {
			CHECK(pp == 0 && valid == 1, "shared: fork revoked a shared registration (callbacks %llu)", (unsigned long long)pp);
			CHECK(check(p, L, 90) < 0, "shared: the child's write is not visible");
		}
		mx_dereg(&e, r.id, r.generation);
		munmap(p, L);
	}
	ep_close(&e);
	snap_finish(&s, O.dev);
	return v_end();
}

/* 9: soft-dirty clear_refs revokes every registration of the mm. */
int s_softdirty(void)
{
	struct snap s;
	struct ep e;
	size_t L = 8 * PAGE;
	v_begin("09-soft-dirty");
	snap_take(&s, O.dev);
	if (ep_open(&e, O.dev) != 0)
		return v_end();
	uint8_t *a = map_anon(L, 0), *b = map_anon(L, 0);
	fill(a, L, 9);
	fill(b, L, 10);
	struct myrimx_reg ra, rb;
	int rc = mx_reg(&e, a, L, MYRIMX_ACCESS_SEND, 0, &ra) | mx_reg(&e, b, L, MYRIMX_ACCESS_RECV, 0, &rb);
	CHECK(rc == 0, "REG: %s", strerror(-rc));
	int fd = open("/proc/self/clear_refs", O_WRONLY);
	if (fd < 0 || write(fd, "4", 1) != 1) {
		V.info_only = 1;
		v_fact("SKIP:clear_refs_soft-dirty_unavailable:%s", strerror(errno));
	} else {
		CHECK(mx_gen_valid(&e, ra.id, ra.generation) == 0 && mx_gen_valid(&e, rb.id, rb.generation) == 0,
		      "a registration survived clear_refs");
	}
	if (fd >= 0)
		close(fd);
	mx_dereg(&e, ra.id, ra.generation);
	mx_dereg(&e, rb.id, rb.generation);
	munmap(a, L);
	munmap(b, L);
	ep_close(&e);
	snap_finish(&s, O.dev);
	if (!V.info_only)
		CHECK(g_inv(MYRIMX_REASON_SOFT_DIRTY) >= 2, "want 2 SOFT_DIRTY invalidations, got %llu",
		      (unsigned long long)g_inv(MYRIMX_REASON_SOFT_DIRTY));
	return v_end();
}

/* 10: SIGKILL of a process whose registered receive B is filling. */
int s_exit(void)
{
	struct snap s;
	int pfd[2];
	size_t L = 64UL << 20;
	v_begin("10-exit-in-flight");
	snap_take(&s, O.dev);
	if (!O.peer_nic) {
		v_fail("no -peer-nic");
		return v_end();
	}
	if (pipe(pfd) != 0) {
		v_fail("pipe: %s", strerror(errno));
		return v_end();
	}
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		struct ep e;
		uint32_t msg[2] = {0, 0};
		if (ep_open(&e, O.dev) == 0) {
			uint8_t *p = map_anon(L, 0);
			struct myrimx_reg r;
			if (p && mx_reg(&e, p, L, MYRIMX_ACCESS_RECV, 0, &r) == 0 &&
			    mx_recv(&e, r.id, r.generation, 0, L, M(10), ~0ULL, 1) == 0) {
				msg[0] = 1;
				msg[1] = e.info.endpoint;
			}
		}
		if (write(pfd[1], msg, sizeof(msg)) != sizeof(msg))
			_exit(1);
		for (;;)
			pause();
	}
	close(pfd[1]);
	uint32_t msg[2];
	int got = read(pfd[0], msg, sizeof(msg)) == sizeof(msg) && msg[0] == 1;
	close(pfd[0]);
	CHECK(got, "the child did not register and post its receive");
	struct ep e;
	if (got && ep_open(&e, O.dev) == 0) {
		int rc = peer_ask(&e, O.peer_nic, PEER_OP_SEND, e.info.nic_id, msg[1], L, M(10), 0, 10, 0, 20000);
		CHECK(rc == 0, "ask the peer: %s", strerror(-rc));
		srand(O.seed);
		unsigned d = (unsigned)(rand() % 300);
		usleep(d * 1000);
		v_fact("kill_after_ms=%u", d);
		ep_close(&e);
	}
	kill(pid, SIGKILL);
	int status;
	waitpid(pid, &status, 0);
	snap_finish(&s, O.dev);
	uint64_t rel = g_inv(MYRIMX_REASON_RELEASE), unm = g_inv(MYRIMX_REASON_UNMAP);
	CHECK(rel + unm >= 1, "the exit revoked nothing (RELEASE %llu, UNMAP %llu)", (unsigned long long)rel,
	      (unsigned long long)unm);
	return v_end();
}

/* 11: close with live registrations. */
int s_close(void)
{
	struct snap s;
	struct ep e;
	size_t L = 8 * PAGE;
	v_begin("11-close-live");
	snap_take(&s, O.dev);
	if (ep_open(&e, O.dev) != 0)
		return v_end();
	void *b[3];
	for (int i = 0; i < 3; i++) {
		b[i] = map_anon(L, 0);
		fill(b[i], L, 110 + i);
		int rc = mx_reg(&e, b[i], L, i == 1 ? MYRIMX_ACCESS_SEND : MYRIMX_ACCESS_RECV, 0, NULL);
		CHECK(rc == 0, "REG %d: %s", i, strerror(-rc));
	}
	ep_close(&e); /* no DEREG */
	for (int i = 0; i < 3; i++)
		munmap(b[i], L);
	snap_finish(&s, O.dev);
	uint64_t user = g_inv(MYRIMX_REASON_USER);
	CHECK(user >= 3, "close revoked %llu registrations with reason USER, want 3", (unsigned long long)user);
	v_fact("lockdep=not-in-kernel(CONFIG_PROVE_LOCKING_unset)");
	return v_end();
}

/* 15 (pinonly) and 16 (notifier): the VA-keyed cache over munmap + mmap at
 * the same VA, with B's data. */
int s_cache(void)
{
	struct snap s;
	struct ep e;
	size_t L = 64 << 10;
	uint32_t id, gen, id2, gen2;
	int hit;
	if (ep_open(&e, O.dev) != 0) {
		v_begin("15-16-cache");
		return v_end();
	}
	int pinonly = e.info.mode == MYRIMX_MODE_PINONLY;
	char name[64];
	snprintf(name, sizeof(name), "%s-%s", pinonly ? "15-cache-pinonly" : "16-cache-notifier",
		 e.info.audit_mode == MYRIMX_AUDIT_ENFORCE ? "enforce" : "observe");
	v_begin(name);
	snap_take(&s, O.dev);
	if (!O.peer_nic) {
		v_fail("no -peer-nic");
		return v_end();
	}
	struct rcache *c = rcache_new(&e, 1);
	uint8_t *v = map_anon(L, 0);
	memset(v, 0, L);
	int rc = rcache_get(c, v, L, MYRIMX_ACCESS_RECV, &id, &gen, &hit);
	CHECK(rc == 0 && !hit, "first get: rc %d hit %d", rc, hit);
	/* use: B sends seed 1 into it */
	int rs = -1;
	if (rc == 0 && (rc = mx_recv(&e, id, gen, 0, L, M(151), ~0ULL, 1)) == 0 &&
	    (rc = peer_ask(&e, O.peer_nic, PEER_OP_SEND, e.info.nic_id, e.info.endpoint, L, M(151), 1, 15, 0, 30000)) == 0)
		rs = wait_status(&e, 1, 30000);
	CHECK(rc == 0 && rs == 0 && check(v, L, 1) < 0, "first use: %s recv %s", strerror(-rc), st(rs));
	if (rc != 0 || rs != 0) {
		rcache_free(c);
		ep_close(&e);
		snap_finish(&s, O.dev);
		return v_end();
	}
	/* free + malloc at the same VA */
	munmap(v, L);
	uint8_t *v2 = mmap(v, L, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	CHECK(v2 == v, "mmap at the old VA: %p (%s)", v2, strerror(errno));
	memset(v2, 0, L);
	if (!pinonly) {
		/* Without the cache: the old handle itself is refused. */
		rc = mx_recv(&e, id, gen, 0, L, M(153), ~0ULL, 9);
		v_fact("raw_stale_handle=%s", rc ? strerror(-rc) : "accepted");
		CHECK(rc != 0, "notifier: RECV with the revoked handle accepted");
	}
	rc = rcache_get(c, v2, L, MYRIMX_ACCESS_RECV, &id2, &gen2, &hit);
	uint64_t dropped = rcache_stale_dropped(c);
	v_fact("cache_hit=%d stale_dropped=%llu", hit, (unsigned long long)dropped);
	int rs2 = -1;
	if (rc == 0) {
		rc = mx_recv(&e, id2, gen2, 0, L, M(152), ~0ULL, 2);
		v_fact("recv_post=%s", rc ? strerror(-rc) : "ok");
		if (rc == 0) {
			rc = peer_ask(&e, O.peer_nic, PEER_OP_SEND, e.info.nic_id, e.info.endpoint, L, M(152), 2, 15, 0, 30000);
			rs2 = wait_status(&e, 2, 30000);
		}
	} else {
		v_fact("get2=%s", strerror(-rc));
	}
	long landed = check(v2, L, 2), zero = check_zero(v2, L);
	v_fact("recv=%s new_buffer=%s", st(rs2), landed < 0 ? "got-data" : zero < 0 ? "unchanged(zero)" : "other");
	rcache_free(c);
	munmap(v2, L);
	int audit_mode = e.info.audit_mode;
	ep_close(&e);
	snap_finish(&s, O.dev);
	long da = audit_count(O.dev) - s.audit;
	if (pinonly) {
		/* The stale handle is used; the data does not reach the new buffer. */
		CHECK(hit == 1, "pinonly: the cache did not hit");
		CHECK(landed >= 0, "pinonly: the data reached the new buffer");
		CHECK(da >= 1, "pinonly: the device audit did not fire (delta %ld)", da);
		if (audit_mode == MYRIMX_AUDIT_ENFORCE)
			CHECK(rs2 == MYRIMX_WAIT_DMA_FAULT, "enforce: RECV completed %s, want DMA_FAULT", st(rs2));
		else
			CHECK(rs2 == 0, "observe: RECV completed %s, want OK (the device let it through)", st(rs2));
	} else {
		CHECK(hit == 0 && dropped == 1, "notifier: the cache hit a revoked entry");
		CHECK(rs2 == 0 && landed < 0, "notifier: data not correct: recv %s", st(rs2));
		CHECK(da == 0, "notifier: %ld audit violations", da);
		CHECK(g_inv(MYRIMX_REASON_UNMAP) >= 1, "notifier: no UNMAP invalidation");
	}
	return v_end();
}

/* 17: SKIP_INVALIDATE, over munmap, MADV_DONTNEED, mprotect and fork. */
int s_skip_invalidate(void)
{
	struct snap s;
	size_t L = 16 * PAGE;
	v_begin("17-bug-skip-invalidate");
	snap_take(&s, O.dev);
	const char *acts[] = {"munmap", "dontneed", "mprotect", "fork"};
	long caught[4] = {0};
	for (int k = 0; k < 4; k++) {
		struct ep e;
		if (ep_open(&e, O.dev) != 0)
			break;
		int rc = mx_bug(&e, MYRIMX_BUG_SKIP_INVALIDATE);
		if (rc) {
			v_fail("DEBUG_BUG: %s (allow_bugs=1?)", strerror(-rc));
			ep_close(&e);
			break;
		}
		uint8_t *p = map_anon(L, 0);
		memset(p, 0, L);
		struct myrimx_reg r;
		rc = mx_reg(&e, p, L, MYRIMX_ACCESS_RECV, 0, &r);
		CHECK(rc == 0, "%s: REG: %s", acts[k], strerror(-rc));
		long a0 = audit_count(O.dev);
		if (k == 0)
			munmap(p, L);
		else if (k == 1)
			madvise(p, L, MADV_DONTNEED);
		else if (k == 2)
			mprotect(p, L, PROT_READ);
		else {
			fflush(stdout);
			pid_t pid = fork();
			if (pid == 0)
				_exit(0);
			waitpid(pid, NULL, 0);
		}
		int valid = mx_gen_valid(&e, r.id, r.generation);
		rc = mx_recv(&e, r.id, r.generation, 0, L, M(170 + k), ~0ULL, 1);
		int ss = local_send(O.dev, &e, L, M(170 + k), 170 + k, NULL);
		int rs = rc ? rc : wait_status(&e, 1, 10000);
		caught[k] = audit_count(O.dev) - a0;
		v_fact("%s:still_valid=%d send=%s recv=%s audit=%ld", acts[k], valid, st(ss), st(rs), caught[k]);
		CHECK(valid == 1, "%s: the bug did not keep the registration", acts[k]);
		mx_dereg(&e, r.id, r.generation);
		ep_close(&e);
		if (k != 0)
			munmap(p, L);
	}
	snap_finish(&s, O.dev);
	CHECK(caught[0] >= 1 && caught[1] >= 1 && caught[2] >= 1,
	      "the audit missed a skipped invalidation: munmap %ld dontneed %ld mprotect %ld", caught[0], caught[1], caught[2]);
	CHECK(g_inv(MYRIMX_REASON_UNMAP) + g_cb(MYRIMX_REASON_UNMAP) >= 1, "no UNMAP callback counted");
	return v_end();
}

/* 18: NO_FENCE_WAIT or UNPIN_BEFORE_FENCE. The device's DEREG is held
 * back by a fault rule the scenario arms itself: a store to DEV_STATUS
 * (read-only, ignored by the device) moves the server's fault state to 2,
 * where the next doorbell of endpoint 0 is dropped (tests/e2e arms the
 * rules); the driver's callback posts DEREG + FENCE and, with the bug,
 * returns without waiting, so munmap completes while the device still
 * holds the region. A later SEND into the posted RECV then writes pages
 * the process no longer maps. */
struct sender {
	struct ep *rx;
	uint32_t len, xfer;
	volatile int posted;
	int status;
};

static void *send_thread(void *arg)
{
	struct sender *a = arg;
	a->status = local_send_ex(O.dev, a->rx, a->len, M(18), 18, &a->xfer, &a->posted);
	a->posted = 1;
	return NULL;
}

int s_fence_bug(const char *which)
{
	struct snap s;
	int nofence = !strcmp(which, "no-fence-wait");
	size_t L = nofence ? 1 << 20 : 16 << 20;
	char name[64];
	snprintf(name, sizeof(name), "18-bug-%s", which);
	v_begin(name);
	snap_take(&s, O.dev);
	struct ep e;
	if (ep_open(&e, O.dev) != 0)
		return v_end();
	CHECK(e.info.endpoint == 0, "the fault rule drops endpoint 0's doorbell; this is endpoint %u", e.info.endpoint);
	int rc = mx_bug(&e, nofence ? MYRIMX_BUG_NO_FENCE_WAIT : MYRIMX_BUG_UNPIN_BEFORE_FENCE);
	CHECK(rc == 0, "DEBUG_BUG: %s", strerror(-rc));
	uint8_t *p = map_anon(L, 0);
	memset(p, 0, L);
	struct myrimx_reg r;
	rc = mx_reg(&e, p, L, MYRIMX_ACCESS_RECV, 0, &r);
	CHECK(rc == 0, "REG: %s", strerror(-rc));
	rc = mx_recv(&e, r.id, r.generation, 0, L, M(18), ~0ULL, 1);
	CHECK(rc == 0, "RECV: %s", strerror(-rc));
	long a0 = audit_count(O.dev);
	int armed = nofence && bar_poke(O.dev, MYRIMX_REG_DEV_STATUS, 0x18) == 0;
	if (nofence)
		CHECK(armed, "cannot store into BAR0 through sysfs to arm the fault");
	uint64_t t0 = now_ms(), dt;
	uint32_t xfer = 0;
	int ss, rs;
	if (nofence) {
		munmap(p, L);
		dt = now_ms() - t0;
		ss = local_send(O.dev, &e, L, M(18), 18, &xfer);
		rs = wait_status(&e, 1, 10000);
	} else {
		/* The SEND into the posted RECV is moving when munmap comes. */
		struct sender a = {.rx = &e, .len = L};
		pthread_t t;
		pthread_create(&t, NULL, send_thread, &a);
		while (!a.posted)
			usleep(100);
		t0 = now_ms();
		munmap(p, L);
		dt = now_ms() - t0;
		pthread_join(t, NULL);
		ss = a.status;
		xfer = a.xfer;
		rs = wait_status(&e, 1, 10000);
	}
	long caught = audit_count(O.dev) - a0;
	v_fact("munmap_ms=%llu send=%s xfer=%u recv=%s audit=%ld mode=%s", (unsigned long long)dt, st(ss), xfer, st(rs),
	       caught, e.info.audit_mode == MYRIMX_AUDIT_ENFORCE ? "enforce" : "observe");
	if (nofence) {
		CHECK(caught >= 1, "the audit missed DMA after munmap with the fence not waited for");
		if (e.info.audit_mode == MYRIMX_AUDIT_ENFORCE)
			CHECK(ss == MYRIMX_WAIT_DMA_FAULT || rs == MYRIMX_WAIT_DMA_FAULT, "enforce: no DMA_FAULT (send %s recv %s)", st(ss), st(rs));
	} else {
		/* The callback still waits for the fence before munmap can
		 * free anything: the early unpin is invisible to the device. */
		V.info_only = caught == 0;
		v_fact("note=early_unpin_not_observable:the_callback_waits_for_the_fence_before_the_PTEs_change");
	}
	ep_close(&e);
	snap_finish(&s, O.dev);
	return v_end();
}

struct racer {
	uint8_t *buf;
	size_t len;
	volatile int stop;
	unsigned seed;
	unsigned long zaps;
};

static void *race_zap(void *arg)
{
	struct racer *z = arg;
	while (!z->stop) {
		usleep(rand_r(&z->seed) % 2000);
		size_t pages = z->len / PAGE;
		size_t first = rand_r(&z->seed) % (pages - 16);
		madvise(z->buf + first * PAGE, 16 * PAGE, MADV_DONTNEED);
		z->zaps++;
	}
	return NULL;
}

/* 19: registration racing invalidation (hmm-tests anon_teardown style):
 * thread 2 MADV_DONTNEEDs 16 pages at random after a random delay while
 * thread 1 registers the buffer and sends it whole, over and over. With
 * NO_SEQ_RETRY a registration publishes pages that are already stale and
 * the page-table audit sees the device read them. */
int s_race(int iters, int bug)
{
	struct snap s;
	size_t L = 4UL << 20;
	v_begin(bug ? "19-race-no-seq-retry" : "19-race");
	snap_take(&s, O.dev);
	struct ep e, sink;
	if (ep_open(&e, O.dev) != 0 || ep_open(&sink, O.dev) != 0)
		return v_end();
	if (bug) {
		int rc = mx_bug(&e, MYRIMX_BUG_NO_SEQ_RETRY);
		CHECK(rc == 0, "DEBUG_BUG: %s", strerror(-rc));
	}
	uint8_t *buf = map_anon(L, 0), *dst = map_anon(L, 0);
	memset(buf, 1, L);
	struct myrimx_reg rd;
	int rc = mx_reg(&sink, dst, L, MYRIMX_ACCESS_RECV, 0, &rd);
	CHECK(rc == 0, "sink REG: %s", strerror(-rc));
	struct racer z = {.buf = buf, .len = L, .seed = O.seed};
	pthread_t t;
	pthread_create(&t, NULL, race_zap, &z);
	long a0 = audit_count(O.dev);
	unsigned long regs = 0, sent = 0, stale = 0, retries = 0;
	int posted = 0;
	uint64_t rcookie = 0;
	int i;
	for (i = 0; i < iters; i++) {
		struct myrimx_reg r;
		if (mx_reg(&e, buf, L, MYRIMX_ACCESS_SEND, 0, &r) != 0)
			continue;
		regs++;
		retries += r.seq_retries;
		if (!posted) {
			rcookie = 1000 + i;
			if (mx_recv(&sink, rd.id, rd.generation, 0, L, 0, 0, rcookie) == 0)
				posted = 1;
		}
		uint64_t cookie = 5000 + i;
		rc = mx_send(&e, r.id, r.generation, 0, L, sink.info.nic_id, (uint16_t)sink.info.endpoint, M(19), cookie);
		if (rc == 0) {
			struct myrimx_event ev;
			if (mx_wait_cookie(&e, cookie, 10000, &ev) == 0) {
				if (ev.status == 0)
					sent++;
				else
					stale++;
				if ((ev.status == 0 || ev.xfer_len > 0 || ev.status == MYRIMX_WAIT_REGION_INVALIDATED) &&
				    wait_status(&sink, rcookie, ev.status == 0 ? 10000 : 500) >= 0)
					posted = 0;
			}
		} else {
			stale++;
		}
		mx_dereg(&e, r.id, r.generation);
		if (bug && i >= 10 && audit_count(O.dev) > a0)
			break; /* caught: no need to go on */
	}
	z.stop = 1;
	pthread_join(t, NULL);
	long caught = audit_count(O.dev) - a0;
	v_fact("iterations=%d regs=%lu sent=%lu revoked_or_stale=%lu zaps=%lu reg_seq_retries=%lu audit=%ld", i, regs, sent,
	       stale, z.zaps, retries, caught);
	mx_dereg(&sink, rd.id, rd.generation);
	ep_close(&sink);
	ep_close(&e);
	munmap(buf, L);
	munmap(dst, L);
	snap_finish(&s, O.dev);
	if (bug)
		CHECK(caught >= 1, "NO_SEQ_RETRY: the audit never fired in %d iterations", i);
	else
		CHECK(caught == 0, "correct driver: %ld audit violations", caught);
	return v_end();
}

/* 20: the device never completes a DEREG (its doorbell is dropped, armed
 * as in 18): the driver's fence times out, it clears bus mastering and
 * reports the device dead; the guest lives. */
int s_fence_timeout(void)
{
	struct snap s;
	size_t L = 64 << 10;
	v_begin("20-fence-timeout");
	snap_take(&s, O.dev);
	struct ep e;
	if (ep_open(&e, O.dev) != 0)
		return v_end();
	CHECK(e.info.endpoint == 0, "the fault rule drops endpoint 0's doorbell; this is endpoint %u", e.info.endpoint);
	uint8_t *p = map_anon(L, 0);
	memset(p, 0, L);
	struct myrimx_reg r;
	int rc = mx_reg(&e, p, L, MYRIMX_ACCESS_RECV, 0, &r);
	CHECK(rc == 0, "REG: %s", strerror(-rc));
	CHECK(bar_poke(O.dev, MYRIMX_REG_DEV_STATUS, 0x20) == 0, "cannot arm the fault through sysfs");
	uint64_t t0 = now_ms();
	munmap(p, L);
	uint64_t dt = now_ms() - t0;
	struct myrimx_info info;
	CHECK(ioctl(e.fd, MYRIMX_IOC_INFO, &info) == 0, "INFO: %s", strerror(errno));
	struct myrimx_stats st;
	mx_stats(&e, MYRIMX_STATS_ENDPOINT, &st);
	void *q = map_anon(PAGE, 0);
	struct myrimx_reg r2;
	int rc2 = mx_reg(&e, q, PAGE, MYRIMX_ACCESS_SEND, 0, &r2);
	v_fact("munmap_ms=%llu fence_timeout_ms=%u dev_dead=%u fence_timeouts=%llu reg_after=%s", (unsigned long long)dt,
	       info.fence_timeout_ms, info.dev_dead, (unsigned long long)st.fence_timeouts, rc2 ? strerror(-rc2) : "accepted");
	CHECK(info.dev_dead == 1, "the driver does not report the device dead");
	CHECK(dt + 50 >= info.fence_timeout_ms, "munmap returned after %llu ms, before the fence timeout", (unsigned long long)dt);
	CHECK(rc2 != 0, "REG accepted on a dead device");
	if (rc2 == 0)
		mx_dereg(&e, r2.id, r2.generation);
	munmap(q, PAGE);
	ep_close(&e);
	snap_finish(&s, O.dev);
	return v_end();
}

/* 22: a stale generation after the id is reused. */
int s_genreuse(void)
{
	struct snap s;
	struct ep e;
	size_t L = 4 * PAGE;
	v_begin("22-stale-generation");
	snap_take(&s, O.dev);
	if (ep_open(&e, O.dev) != 0)
		return v_end();
	uint8_t *p = map_anon(L, 0);
	fill(p, L, 22);
	struct myrimx_reg r1, r2;
	int rc = mx_reg(&e, p, L, MYRIMX_ACCESS_SEND, 0, &r1);
	CHECK(rc == 0, "REG: %s", strerror(-rc));
	CHECK(mx_dereg(&e, r1.id, r1.generation) == 0, "DEREG");
	/* The driver hands ids out round-robin: register until r1's id comes
	 * back, so that (id, old generation) and (id, new generation) meet. */
	int regs = 0;
	for (;;) {
		rc = mx_reg(&e, p, L, MYRIMX_ACCESS_SEND, 0, &r2);
		regs++;
		if (rc != 0 || r2.id == r1.id || regs > 2 * MYRIMX_REGIONS_PER_EP)
			break;
		mx_dereg(&e, r2.id, r2.generation);
	}
	CHECK(rc == 0, "REG again: %s", strerror(-rc));
	CHECK(r2.id == r1.id, "id %u never came back in %d REGs", r1.id, regs);
	v_fact("first=%u/%u second=%u/%u after=%d_regs", r1.id, r1.generation, r2.id, r2.generation, regs);
	CHECK(r2.id != r1.id || r2.generation != r1.generation, "the same (id, generation) twice");
	rc = mx_send(&e, r1.id, r1.generation, 0, L, e.info.nic_id, (uint16_t)e.info.endpoint, M(22), 1);
	v_fact("send_old=%s", rc ? strerror(-rc) : "accepted");
	CHECK(rc == -ESTALE || rc == -EINVAL, "SEND with the retired generation: %s", rc ? strerror(-rc) : "accepted");
	if (rc == 0)
		v_fact("send_old_completion=%s", st(wait_status(&e, 1, 5000)));
	rc = mx_send_f(&e, r1.id, r1.generation, 0, L, e.info.nic_id, (uint16_t)e.info.endpoint, M(22), 2,
		       MYRIMX_XFER_UNCHECKED);
	int dev = rc ? rc : wait_status(&e, 2, 10000);
	v_fact("send_old_device=%s", st(dev));
	CHECK(dev == MYRIMX_WAIT_BAD_RDMAWIN, "the device's answer to the retired generation: %s, want BAD_RDMAWIN", st(dev));
	CHECK(mx_gen_valid(&e, r2.id, r2.generation) == 1, "gen map does not show the new generation");
	mx_dereg(&e, r2.id, r2.generation);
	munmap(p, L);
	ep_close(&e);
	snap_finish(&s, O.dev);
	return v_end();
}

/* Acceptance 4: B sends 64 MiB of its pattern into A's registered buffer;
 * rounds times. */
int s_perf(int rounds)
{
	struct snap s;
	struct ep e;
	size_t L = 64UL << 20;
	v_begin("perf-64MiB");
	V.info_only = 0;
	snap_take(&s, O.dev);
	if (!O.peer_nic || ep_open(&e, O.dev) != 0) {
		v_fail("no peer or endpoint");
		return v_end();
	}
	uint8_t *p = map_anon(L, 0);
	memset(p, 0, L);
	struct myrimx_reg r;
	uint64_t t0 = now_ms();
	int rc = mx_reg(&e, p, L, MYRIMX_ACCESS_RECV, 0, &r);
	uint64_t reg_ms = now_ms() - t0;
	CHECK(rc == 0, "REG 64 MiB: %s", strerror(-rc));
	uint64_t best = ~0ULL;
	for (int k = 0; rc == 0 && k < rounds; k++) {
		memset(p, 0, L);
		uint64_t cookie = 100 + k;
		rc = mx_recv(&e, r.id, r.generation, 0, L, M(400 + k), ~0ULL, cookie);
		if (rc)
			break;
		t0 = now_ms();
		rc = peer_ask(&e, O.peer_nic, PEER_OP_SEND, e.info.nic_id, e.info.endpoint, L, M(400 + k), 0, 400 + k, 0, 120000);
		int rs = wait_status(&e, cookie, 120000);
		uint64_t ms = now_ms() - t0;
		long bad = check(p, L, 0);
		CHECK(rc == 0 && rs == 0 && bad < 0, "round %d: ask %d recv %s pattern bad at %ld", k, rc, st(rs), bad);
		v_fact("round%d_ms=%llu", k, (unsigned long long)ms);
		if (ms < best)
			best = ms;
	}
	if (best && best != ~0ULL)
		v_fact("bytes=%zu best_ms=%llu MBps=%.1f reg_ms=%llu", L, (unsigned long long)best,
		       (double)L / 1e6 / ((double)best / 1000), (unsigned long long)reg_ms);
	mx_dereg(&e, r.id, r.generation);
	munmap(p, L);
	ep_close(&e);
	snap_finish(&s, O.dev);
	return v_end();
}
