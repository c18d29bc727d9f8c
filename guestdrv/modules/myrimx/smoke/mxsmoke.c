// SPDX-License-Identifier: GPL-2.0
/*
 * mxsmoke - the myrimx module author's smoke checks (not the e2e suite):
 * one subcommand per milestone of docs/myrimx-driver.md, each printing
 * "mxsmoke: <name>: PASS|FAIL ..." lines.
 *
 *   mxsmoke info
 *   mxsmoke reg                 REG/QUERY_REG/DEREG, gen map, pins balanced
 *   mxsmoke munmap              RECV posted, munmap: REGION_INVALIDATED, UNMAP counted
 *   mxsmoke fork                a fork child's ioctl is refused
 *   mxsmoke recv DIR LEN        post a RECV, publish (nic, ep) in DIR, check the pattern
 *   mxsmoke send DIR LEN PEER   send LEN bytes of the pattern to guest PEER's RECV
 *   mxsmoke stale DIR LEN       the pinonly user-cache bug: munmap + mmap at the same VA, RECV with the cached handle
 *   mxsmoke reasons             MADV_DONTNEED, mprotect, fork, clear_refs each revoke with their reason
 *   mxsmoke race [N]            REG/DEREG loop against a thread zapping pages: seq retries, no stale registration
 *   mxsmoke deadfence BDF       bus master cleared behind the driver: the munmap fence times out, device dead
 *   mxsmoke inflight DIR LEN [BUGS] munmap a RECV buffer while the peer's SEND writes it
 *   mxsmoke exit                a child exits with live registrations: RELEASE
 *   mxsmoke skipinv DIR LEN     allow_bugs=1: SKIP_INVALIDATE, munmap, the peer's SEND lands in orphaned pages
 *
 * Build: gcc -static -O2 -pthread -I../../../include -o mxsmoke mxsmoke.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "myrimx_abi.h"
#include "myrimx_ioctl.h"

static int failures;

#define CHECK(name, cond, ...) do {						\
	if (cond) {								\
		printf("mxsmoke: %s: PASS\n", name);				\
	} else {								\
		printf("mxsmoke: %s: FAIL ", name);				\
		printf(__VA_ARGS__);						\
		printf("\n");							\
		failures++;							\
	}									\
	fflush(stdout);								\
} while (0)

static void die(const char *what)
{
	printf("mxsmoke: FATAL %s: %s\n", what, strerror(errno));
	exit(2);
}

/* open_dev finds /dev/myrimx0, making the node from sysfs when there is
 * no devtmpfs or udev. */
static int open_dev(void)
{
	int fd = open(MYRIMX_DEV_PREFIX "0", O_RDWR);
	unsigned int maj, min;
	FILE *f;

	if (fd >= 0 || errno != ENOENT)
		return fd;
	f = fopen(MYRIMX_SYSFS_CLASS "/myrimx0/dev", "r");
	if (!f)
		die("no /dev/myrimx0 and no " MYRIMX_SYSFS_CLASS "/myrimx0/dev");
	if (fscanf(f, "%u:%u", &maj, &min) != 2)
		die("parse dev");
	fclose(f);
	if (mknod(MYRIMX_DEV_PREFIX "0", S_IFCHR | 0600, makedev(maj, min)) && errno != EEXIST)
		die("mknod");
	return open(MYRIMX_DEV_PREFIX "0", O_RDWR);
}

static void vmstat_pins(long long *acq, long long *rel)
{
	char line[128];
	FILE *f = fopen("/proc/vmstat", "r");

	*acq = *rel = -1;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "nr_foll_pin_acquired %lld", acq);
		sscanf(line, "nr_foll_pin_released %lld", rel);
	}
	fclose(f);
}

static void check_pins(const char *name)
{
	long long a, r;
	char n[64];

	/* other I/O (9p) pins pages for a moment: give it 2 s to settle */
	for (int i = 0; i < 20; i++) {
		vmstat_pins(&a, &r);
		if (a == r)
			break;
		usleep(100000);
	}
	snprintf(n, sizeof(n), "%s: pins balanced", name);
	CHECK(n, a >= 0 && a == r, "nr_foll_pin_acquired %lld nr_foll_pin_released %lld", a, r);
}

static void *map_buf(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 7 + (i >> 12) + 1);
}

static int reg(int fd, void *va, size_t len, unsigned int access, struct myrimx_reg *r)
{
	memset(r, 0, sizeof(*r));
	r->va = (uintptr_t)va;
	r->len = len;
	r->access = access;
	return ioctl(fd, MYRIMX_IOC_REG, r);
}

static int dereg(int fd, unsigned int id, unsigned int gen)
{
	struct myrimx_dereg d = { .id = id, .generation = gen };

	return ioctl(fd, MYRIMX_IOC_DEREG, &d);
}

static int wait_one(int fd, struct myrimx_event *ev, int timeout_ms)
{
	struct myrimx_wait w = { .events = (uintptr_t)ev, .max = 1, .timeout_ms = timeout_ms };

	if (ioctl(fd, MYRIMX_IOC_WAIT, &w))
		return -1;
	return w.count;
}

static void stats(int fd, int scope, struct myrimx_stats *s)
{
	memset(s, 0, sizeof(*s));
	s->scope = scope;
	if (ioctl(fd, MYRIMX_IOC_STATS, s))
		die("STATS");
}

static void print_stats(const char *name, struct myrimx_stats *s)
{
	printf("mxsmoke: %s stats: inval UNMAP %llu CLEAR %llu PROT_VMA %llu PROT_PAGE %llu SOFT_DIRTY %llu RELEASE %llu USER %llu;"
	       " spurious %llu seq_retries %llu dereg %llu fences %llu (min %llu max %llu avg %llu ns) timeouts %llu pins_held %lld acquired %llu released %llu irqs %llu\n",
	       name, s->invalidations[0], s->invalidations[1], s->invalidations[2], s->invalidations[3],
	       s->invalidations[4], s->invalidations[5], s->invalidations[8], s->spurious, s->seq_retries,
	       s->dereg, s->fences, s->fence_ns_min, s->fence_ns_max, s->fences ? s->fence_ns_sum / s->fences : 0,
	       s->fence_timeouts, (long long)s->pins_held, s->pins_acquired, s->pins_released, s->irqs);
}

static int cmd_info(void)
{
	struct myrimx_info in;
	int fd = open_dev();

	if (fd < 0)
		die("open");
	memset(&in, 0, sizeof(in));
	CHECK("info: ioctl", ioctl(fd, MYRIMX_IOC_INFO, &in) == 0, "%s", strerror(errno));
	printf("mxsmoke: info: nic_id %012llx caps %#llx abi %#x ioctl v%u endpoint %u mode %u max_regions %u max_pages %u audit %u allow_bugs %u gen_map %llu\n",
	       (unsigned long long)in.nic_id, (unsigned long long)in.caps, in.abi_version, in.ioctl_version, in.endpoint,
	       in.mode, in.max_regions, in.max_pages, in.audit_mode, in.allow_bugs, (unsigned long long)in.gen_map_size);
	CHECK("info: abi", in.abi_version == MYRIMX_ABI_VERSION && in.ioctl_version == MYRIMX_IOCTL_VERSION, "abi %#x", in.abi_version);
	close(fd);
	return 0;
}

static int cmd_reg(void)
{
	size_t len = 64 << 10;
	struct myrimx_query_reg q;
	struct myrimx_info in;
	struct myrimx_reg r;
	struct myrimx_stats s;
	uint64_t gpas[32];
	volatile uint32_t *gm;
	unsigned char *buf;
	int fd = open_dev();

	if (fd < 0 || ioctl(fd, MYRIMX_IOC_INFO, &in))
		die("open/info");
	gm = mmap(NULL, in.gen_map_size, PROT_READ, MAP_SHARED, fd, MYRIMX_GEN_MAP_OFFSET);
	if (gm == MAP_FAILED)
		die("mmap gen map");
	CHECK("reg: gen map refuses PROT_WRITE",
	      mmap(NULL, in.gen_map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED, "mapped writable");
	buf = map_buf(len);
	memset(buf, 0x5a, len);
	CHECK("reg: REG", reg(fd, buf + 100, len - 200, MYRIMX_ACCESS_SEND | MYRIMX_ACCESS_RECV, &r) == 0, "%s", strerror(errno));
	printf("mxsmoke: reg: id %u gen %u pages %u retries %u\n", r.id, r.generation, r.nr_pages, r.seq_retries);
	CHECK("reg: gen map valid", myrimx_gen_valid(gm, r.id, r.generation), "gen_map[%u]=%u", r.id, gm[r.id]);
	memset(&q, 0, sizeof(q));
	q.id = r.id;
	q.gpas = (uintptr_t)gpas;
	q.max_gpas = 32;
	CHECK("reg: QUERY_REG", ioctl(fd, MYRIMX_IOC_QUERY_REG, &q) == 0 && q.state == MYRIMX_REGION_VALID &&
	      q.nr_pages == 16 && q.nr_gpas == 16 && q.pins == 16, "state %u pages %u gpas %u pins %u", q.state, q.nr_pages, q.nr_gpas, q.pins);
	printf("mxsmoke: reg: gpa[0] %#llx gpa[15] %#llx\n", (unsigned long long)gpas[0], (unsigned long long)gpas[15]);
	CHECK("reg: DEREG wrong gen is ESTALE", dereg(fd, r.id, r.generation + 1) == -1 && errno == ESTALE, "%s", strerror(errno));
	CHECK("reg: DEREG", dereg(fd, r.id, r.generation) == 0, "%s", strerror(errno));
	CHECK("reg: gen map cleared", !myrimx_gen_valid(gm, r.id, r.generation), "still valid");
	ioctl(fd, MYRIMX_IOC_QUERY_REG, &q);
	CHECK("reg: FREE after DEREG, reason USER", q.state == MYRIMX_REGION_FREE && q.last_reason == MYRIMX_REASON_USER,
	      "state %u reason %u", q.state, q.last_reason);
	stats(fd, MYRIMX_STATS_ENDPOINT, &s);
	print_stats("reg", &s);
	CHECK("reg: one fence, pins back", s.fences == 1 && s.pins_held == 0 && s.pins_acquired == 16, "fences %llu", s.fences);
	/* a registration left for close to tear down */
	CHECK("reg: REG for close", reg(fd, buf, len, MYRIMX_ACCESS_RECV, &r) == 0, "%s", strerror(errno));
	munmap((void *)gm, in.gen_map_size);
	close(fd);
	munmap(buf, len);
	check_pins("reg");
	return 0;
}

static int cmd_munmap(void)
{
	size_t len = 64 << 10;
	struct myrimx_recv rv;
	struct myrimx_event ev;
	struct myrimx_query_reg q;
	struct myrimx_stats s;
	struct myrimx_reg r;
	void *buf;
	int fd = open_dev(), n;

	if (fd < 0)
		die("open");
	buf = map_buf(len);
	memset(buf, 1, len);
	if (reg(fd, buf, len, MYRIMX_ACCESS_RECV, &r))
		die("REG");
	memset(&rv, 0, sizeof(rv));
	rv.id = r.id;
	rv.generation = r.generation;
	rv.len = len;
	rv.match = 0x1234;
	rv.mask = ~0ULL;
	rv.cookie = 0xc0ffee;
	CHECK("munmap: RECV posted", ioctl(fd, MYRIMX_IOC_RECV, &rv) == 0, "%s", strerror(errno));
	munmap(buf, len);
	n = wait_one(fd, &ev, 10000);
	CHECK("munmap: RECV completes REGION_INVALIDATED", n == 1 && ev.type == MYRIMX_EVENT_RECV_DONE &&
	      ev.status == MYRIMX_WAIT_REGION_INVALIDATED && ev.cookie == 0xc0ffee,
	      "n %d type %u status %u cookie %#llx", n, ev.type, ev.status, (unsigned long long)ev.cookie);
	memset(&q, 0, sizeof(q));
	q.id = r.id;
	ioctl(fd, MYRIMX_IOC_QUERY_REG, &q);
	CHECK("munmap: INVALID, reason UNMAP, unpinned", q.state == MYRIMX_REGION_INVALID &&
	      q.last_reason == MYRIMX_REASON_UNMAP && q.pins == 0, "state %u reason %u pins %u", q.state, q.last_reason, q.pins);
	stats(fd, MYRIMX_STATS_ENDPOINT, &s);
	print_stats("munmap", &s);
	CHECK("munmap: UNMAP counted, fenced", s.invalidations[MYRIMX_REASON_UNMAP] == 1 && s.fences == 1 && s.dereg == 1,
	      "unmap %llu fences %llu", s.invalidations[0], s.fences);
	CHECK("munmap: RECV on the old handle is ESTALE", ioctl(fd, MYRIMX_IOC_RECV, &rv) == -1 && errno == ESTALE, "%s", strerror(errno));
	CHECK("munmap: DEREG of the invalidated handle", dereg(fd, r.id, r.generation) == 0, "%s", strerror(errno));
	close(fd);
	check_pins("munmap");
	return 0;
}

static int cmd_fork(void)
{
	struct myrimx_info in;
	int fd = open_dev(), st;
	pid_t pid;

	if (fd < 0)
		die("open");
	pid = fork();
	if (pid == 0)
		_exit(ioctl(fd, MYRIMX_IOC_INFO, &in) == -1 && errno == EIO ? 0 : 1);
	waitpid(pid, &st, 0);
	CHECK("fork: child's ioctl refused with EIO", WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
	CHECK("fork: parent's ioctl works", ioctl(fd, MYRIMX_IOC_INFO, &in) == 0, "%s", strerror(errno));
	close(fd);
	return 0;
}

static void publish(const char *dir, const char *what, const char *text)
{
	char p[512], t[600];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", dir, what);
	snprintf(t, sizeof(t), "%s.tmp", p);
	f = fopen(t, "w");
	if (!f)
		die("publish");
	fputs(text, f);
	fclose(f);
	rename(t, p);
}

static int await(const char *dir, const char *what, char *out, size_t n, int secs)
{
	char p[512];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", dir, what);
	for (int i = 0; i < secs * 10; i++) {
		f = fopen(p, "r");
		if (f) {
			out[0] = 0;
			if (!fgets(out, n, f))
				out[0] = 0;
			fclose(f);
			return 0;
		}
		usleep(100000);
	}
	return -1;
}

/* do_recv posts one RECV into [buf, buf+len) with handle r, announces it
 * in DIR and waits for the message. */
static int do_recv(int fd, const char *dir, struct myrimx_reg *r, size_t len, struct myrimx_event *ev)
{
	struct myrimx_info in;
	struct myrimx_recv rv;
	char text[128];

	if (ioctl(fd, MYRIMX_IOC_INFO, &in))
		die("INFO");
	memset(&rv, 0, sizeof(rv));
	rv.id = r->id;
	rv.generation = r->generation;
	rv.len = len;
	rv.match = 0x77;
	rv.mask = ~0ULL;
	rv.cookie = 0xbeef;
	if (ioctl(fd, MYRIMX_IOC_RECV, &rv))
		die("RECV");
	snprintf(text, sizeof(text), "%llx %u\n", (unsigned long long)in.nic_id, in.endpoint);
	publish(dir, "mx-peer", text);
	return wait_one(fd, ev, 300000);
}

static int cmd_recv(const char *dir, size_t len)
{
	struct myrimx_event ev;
	struct myrimx_reg r;
	unsigned char *buf;
	size_t bad = 0, i;
	int fd = open_dev(), n;

	if (fd < 0)
		die("open");
	buf = map_buf(len);
	memset(buf, 0, len);
	if (reg(fd, buf, len, MYRIMX_ACCESS_RECV, &r))
		die("REG");
	n = do_recv(fd, dir, &r, len, &ev);
	CHECK("recv: RECV_DONE OK", n == 1 && ev.type == MYRIMX_EVENT_RECV_DONE && ev.status == MYRIMX_WAIT_OK &&
	      ev.xfer_len == len && ev.msg_len == len,
	      "n %d type %u status %u xfer %u msg %u", n, ev.type, ev.status, ev.xfer_len, ev.msg_len);
	for (i = 0; i < len; i++)
		if (buf[i] != pattern(i))
			bad++;
	CHECK("recv: pattern at the receiver", bad == 0, "%zu bytes differ", bad);
	if (dereg(fd, r.id, r.generation))
		die("DEREG");
	close(fd);
	munmap(buf, len);
	check_pins("recv");
	publish(dir, "mx-recv-done", "1\n");
	return 0;
}

static int cmd_send(const char *dir, size_t len)
{
	struct myrimx_event ev;
	struct myrimx_send sd;
	struct myrimx_reg r;
	unsigned long long nic;
	unsigned int ep;
	unsigned char *buf;
	char text[128];
	size_t i, bad = 0;
	struct timespec t0, t1;
	int fd = open_dev(), n;

	if (fd < 0)
		die("open");
	if (await(dir, "mx-peer", text, sizeof(text), 300) || sscanf(text, "%llx %u", &nic, &ep) != 2)
		die("no peer");
	buf = map_buf(len);
	for (i = 0; i < len; i++)
		buf[i] = pattern(i);
	if (reg(fd, buf, len, MYRIMX_ACCESS_SEND, &r))
		die("REG");
	memset(&sd, 0, sizeof(sd));
	sd.id = r.id;
	sd.generation = r.generation;
	sd.len = len;
	sd.dest_nic = nic;
	sd.dest_ep = ep;
	sd.match = 0x77;
	sd.cookie = 0x5e4d;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK("send: SEND posted", ioctl(fd, MYRIMX_IOC_SEND, &sd) == 0, "%s", strerror(errno));
	n = wait_one(fd, &ev, 300000);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	CHECK("send: SEND_DONE OK", n == 1 && ev.type == MYRIMX_EVENT_SEND_DONE && ev.status == MYRIMX_WAIT_OK &&
	      ev.xfer_len == len, "n %d type %u status %u xfer %u", n, ev.type, ev.status, ev.xfer_len);
	printf("mxsmoke: send: %zu bytes to %012llx/%u in %.3f s\n", len, nic, ep,
	       (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	for (i = 0; i < len; i++)
		if (buf[i] != pattern(i))
			bad++;
	CHECK("send: pattern intact at the sender", bad == 0, "%zu bytes differ", bad);
	if (dereg(fd, r.id, r.generation))
		die("DEREG");
	close(fd);
	munmap(buf, len);
	check_pins("send");
	return 0;
}

/* cmd_stale is the registration-cache bug of zero-copy-design.md 6.10
 * scenario 15: a VA-keyed cache keeps (id, gen) across munmap + mmap at the
 * same address. In pinonly mode the device still accepts the handle and
 * the message lands in the orphaned pages; the audit (A7) must say so. */
static int cmd_stale(const char *dir, size_t len)
{
	struct myrimx_info in;
	struct myrimx_event ev;
	struct myrimx_reg r;
	unsigned char *buf, *again;
	size_t i, changed = 0;
	int fd = open_dev(), n;

	if (fd < 0 || ioctl(fd, MYRIMX_IOC_INFO, &in))
		die("open");
	buf = map_buf(len);
	memset(buf, 0, len);
	if (reg(fd, buf, len, MYRIMX_ACCESS_RECV, &r))
		die("REG");
	/* the cache keeps (buf -> r); the program frees and reallocates */
	munmap(buf, len);
	again = mmap(buf, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (again != buf)
		die("mmap at the same VA");
	memset(again, 0xee, len);
	if (in.mode != MYRIMX_MODE_PINONLY) {
		struct myrimx_recv rv = { .id = r.id, .generation = r.generation, .len = len };

		CHECK("stale: notifier mode refuses the cached handle", ioctl(fd, MYRIMX_IOC_RECV, &rv) == -1 && errno == ESTALE,
		      "%s", strerror(errno));
		dereg(fd, r.id, r.generation);
		close(fd);
		return 0;
	}
	n = do_recv(fd, dir, &r, len, &ev);
	for (i = 0; i < len; i++)
		if (again[i] != 0xee)
			changed++;
	printf("mxsmoke: stale: RECV n %d type %u status %u xfer %u; new buffer bytes changed %zu of %zu\n",
	       n, ev.type, ev.status, ev.xfer_len, changed, len);
	if (in.audit_mode == MYRIMX_AUDIT_ENFORCE)
		CHECK("stale: enforce: the audit refused the write, RECV completes DMA_FAULT", n == 1 &&
		      ev.status == MYRIMX_WAIT_DMA_FAULT && changed == 0, "status %u changed %zu", ev.status, changed);
	else
		CHECK("stale: the device wrote the orphaned pages (bug reproduced)", n == 1 && ev.status == MYRIMX_WAIT_OK &&
		      changed == 0, "status %u changed %zu", ev.status, changed);
	dereg(fd, r.id, r.generation);
	close(fd);
	check_pins("stale");
	publish(dir, "mx-recv-done", "1\n");
	return 0;
}

/* reason_case registers a fresh 16-page buffer, runs action on it and
 * checks the registration was revoked for want. */
static void reason_case(int fd, const char *name, int want, void (*action)(unsigned char *, size_t))
{
	size_t len = 16 << 12;
	struct myrimx_stats s0, s1;
	struct myrimx_query_reg q;
	struct myrimx_reg r;
	unsigned char *buf = map_buf(len);
	char n[96];

	memset(buf, 3, len);
	stats(fd, MYRIMX_STATS_ENDPOINT, &s0);
	if (reg(fd, buf, len, MYRIMX_ACCESS_RECV | MYRIMX_ACCESS_SEND, &r))
		die("REG");
	action(buf, len);
	memset(&q, 0, sizeof(q));
	q.id = r.id;
	ioctl(fd, MYRIMX_IOC_QUERY_REG, &q);
	stats(fd, MYRIMX_STATS_ENDPOINT, &s1);
	snprintf(n, sizeof(n), "reasons: %s revokes with reason %d", name, want);
	CHECK(n, q.state == MYRIMX_REGION_INVALID && q.last_reason == (unsigned int)want && q.pins == 0 &&
	      s1.invalidations[want] == s0.invalidations[want] + 1 && s1.fences == s0.fences + 1,
	      "state %u reason %u pins %u count %llu->%llu", q.state, q.last_reason, q.pins,
	      s0.invalidations[want], s1.invalidations[want]);
	dereg(fd, r.id, r.generation);
	munmap(buf, len);
}

static void act_dontneed(unsigned char *b, size_t len) { (void)len; madvise(b + 5 * 4096, 4096, MADV_DONTNEED); }
static void act_mprotect(unsigned char *b, size_t len) { mprotect(b, len, PROT_READ); }
static void act_clear_refs(unsigned char *b, size_t len)
{
	int f = open("/proc/self/clear_refs", O_WRONLY);

	(void)b, (void)len;
	if (f < 0 || write(f, "4", 1) != 1)
		printf("mxsmoke: clear_refs: %s\n", strerror(errno));
	close(f);
}
static void act_fork(unsigned char *b, size_t len)
{
	pid_t pid = fork();
	int st;

	(void)b, (void)len;
	if (pid == 0)
		_exit(0);
	waitpid(pid, &st, 0);
}

static int cmd_reasons(void)
{
	struct myrimx_stats s;
	int fd = open_dev();

	if (fd < 0)
		die("open");
	reason_case(fd, "MADV_DONTNEED of one page", MYRIMX_REASON_CLEAR, act_dontneed);
	reason_case(fd, "mprotect(PROT_READ)", MYRIMX_REASON_PROTECTION_VMA, act_mprotect);
	reason_case(fd, "fork (private anonymous)", MYRIMX_REASON_PROTECTION_PAGE, act_fork);
	reason_case(fd, "clear_refs 4", MYRIMX_REASON_SOFT_DIRTY, act_clear_refs);
	stats(fd, MYRIMX_STATS_ENDPOINT, &s);
	print_stats("reasons", &s);
	close(fd);
	check_pins("reasons");
	return 0;
}

/* cmd_exit: a child registers two buffers and exits without DEREG or
 * close: the notifier sees RELEASE, then close tears down. */
static int cmd_exit(void)
{
	struct myrimx_stats s0, s1;
	int fd = open_dev(), st;
	pid_t pid;

	if (fd < 0)
		die("open");
	stats(fd, MYRIMX_STATS_GLOBAL, &s0);
	pid = fork();
	if (pid == 0) {
		int cfd = open_dev();
		struct myrimx_reg r;
		unsigned char *b = map_buf(1 << 20);

		memset(b, 1, 1 << 20);
		if (cfd < 0 || reg(cfd, b, 1 << 19, MYRIMX_ACCESS_RECV, &r) ||
		    reg(cfd, b + (1 << 19), 1 << 19, MYRIMX_ACCESS_SEND, &r))
			_exit(3);
		_exit(0);
	}
	waitpid(pid, &st, 0);
	stats(fd, MYRIMX_STATS_GLOBAL, &s1);
	printf("mxsmoke: exit: RELEASE %llu->%llu USER %llu->%llu\n", s0.invalidations[MYRIMX_REASON_RELEASE],
	       s1.invalidations[MYRIMX_REASON_RELEASE], s0.invalidations[MYRIMX_REASON_USER], s1.invalidations[MYRIMX_REASON_USER]);
	CHECK("exit: both registrations revoked by RELEASE", WIFEXITED(st) && WEXITSTATUS(st) == 0 &&
	      s1.invalidations[MYRIMX_REASON_RELEASE] == s0.invalidations[MYRIMX_REASON_RELEASE] + 2,
	      "status %#x", st);
	close(fd);
	check_pins("exit");
	return 0;
}

/* cmd_skipinv: with SKIP_INVALIDATE the munmapped registration stays valid
 * and the peer's SEND lands in the orphaned pages: the audit must see A7.
 * Receiver side; the sender is "send". */
static int cmd_skipinv(const char *dir, size_t len)
{
	struct myrimx_debug_bug bug = { .bugs = MYRIMX_BUG_SKIP_INVALIDATE };
	struct myrimx_event ev;
	struct myrimx_reg r;
	struct myrimx_query_reg q;
	unsigned char *buf;
	int fd = open_dev(), n;

	if (fd < 0)
		die("open");
	CHECK("skipinv: DEBUG_BUG accepted", ioctl(fd, MYRIMX_IOC_DEBUG_BUG, &bug) == 0, "%s (allow_bugs=1?)", strerror(errno));
	buf = map_buf(len);
	memset(buf, 0, len);
	if (reg(fd, buf, len, MYRIMX_ACCESS_RECV, &r))
		die("REG");
	munmap(buf, len);
	memset(&q, 0, sizeof(q));
	q.id = r.id;
	ioctl(fd, MYRIMX_IOC_QUERY_REG, &q);
	CHECK("skipinv: still VALID after munmap (the bug)", q.state == MYRIMX_REGION_VALID && q.last_reason == MYRIMX_REASON_UNMAP,
	      "state %u reason %u", q.state, q.last_reason);
	n = do_recv(fd, dir, &r, len, &ev);
	printf("mxsmoke: skipinv: RECV n %d status %u xfer %u\n", n, ev.status, ev.xfer_len);
	bug.bugs = 0;
	ioctl(fd, MYRIMX_IOC_DEBUG_BUG, &bug);
	dereg(fd, r.id, r.generation);
	close(fd);
	check_pins("skipinv");
	publish(dir, "mx-recv-done", "1\n");
	return 0;
}

struct race {
	unsigned char *buf;
	size_t len;
	volatile int stop;
	unsigned int seed;
	long zaps;
};

static void *zapper(void *arg)
{
	struct race *rc = arg;

	while (!rc->stop) {
		size_t page = rand_r(&rc->seed) % (rc->len / 4096);

		usleep(rand_r(&rc->seed) % 2000);
		madvise(rc->buf + page * 4096, 4096, MADV_DONTNEED);
		rc->buf[page * 4096] = 1;	/* fault it back in */
		rc->zaps++;
	}
	return NULL;
}

/* cmd_race: REG/DEREG of a buffer in a loop while a thread zaps random
 * pages of it (hmm-tests' anon_teardown style): read_retry must absorb the
 * collisions; every REG that succeeded was either revoked (CLEAR) or
 * DEREGed, never left stale. */
static int cmd_race(int iters)
{
	struct race rc = { .len = 256 << 12, .seed = 12345 };
	struct myrimx_stats s;
	struct myrimx_reg r;
	pthread_t t;
	int fd = open_dev(), ok = 0, eagain = 0, other = 0;

	if (fd < 0)
		die("open");
	rc.buf = map_buf(rc.len);
	memset(rc.buf, 1, rc.len);
	pthread_create(&t, NULL, zapper, &rc);
	for (int i = 0; i < iters; i++) {
		if (reg(fd, rc.buf, rc.len, MYRIMX_ACCESS_RECV | MYRIMX_ACCESS_SEND, &r) == 0) {
			ok++;
			usleep(rand_r(&rc.seed) % 3000);
			if (dereg(fd, r.id, r.generation))
				other++;
		} else if (errno == EAGAIN) {
			eagain++;
		} else {
			printf("mxsmoke: race: REG: %s\n", strerror(errno));
			other++;
		}
	}
	rc.stop = 1;
	pthread_join(t, NULL);
	stats(fd, MYRIMX_STATS_ENDPOINT, &s);
	print_stats("race", &s);
	printf("mxsmoke: race: %d iterations, %d registered, %d EAGAIN, %ld zaps, seq_retries %llu, CLEAR revocations %llu\n",
	       iters, ok, eagain, rc.zaps, s.seq_retries, s.invalidations[MYRIMX_REASON_CLEAR]);
	CHECK("race: no unexpected errors", other == 0 && ok > 0, "%d errors, %d ok", other, ok);
	close(fd);
	munmap(rc.buf, rc.len);
	check_pins("race");
	return 0;
}

/* cmd_deadfence: the fence-timeout path. Register, then turn bus mastering
 * off behind the driver's back (PCI COMMAND through sysfs, as a wedged
 * device would look: it can no longer read its ring), then munmap: the
 * callback's fence must time out, the driver clear bus master, declare the
 * device dead and still release the pins. Run with a small
 * fence_timeout_ms. */
static int cmd_deadfence(const char *bdf)
{
	struct myrimx_event ev;
	struct myrimx_info in;
	struct myrimx_stats s;
	struct myrimx_reg r;
	char path[256];
	unsigned char cmd[2];
	size_t len = 64 << 10;
	void *buf;
	int fd = open_dev(), cfg, n;

	if (fd < 0)
		die("open");
	buf = map_buf(len);
	memset(buf, 1, len);
	if (reg(fd, buf, len, MYRIMX_ACCESS_RECV, &r))
		die("REG");
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/config", bdf);
	cfg = open(path, O_RDWR);
	if (cfg < 0 || pread(cfg, cmd, 2, 4) != 2)
		die("config");
	cmd[0] &= ~0x04;	/* COMMAND.MASTER off */
	if (pwrite(cfg, cmd, 2, 4) != 2)
		die("config write");
	close(cfg);
	munmap(buf, len);
	stats(fd, MYRIMX_STATS_ENDPOINT, &s);
	print_stats("deadfence", &s);
	memset(&in, 0, sizeof(in));
	ioctl(fd, MYRIMX_IOC_INFO, &in);
	CHECK("deadfence: fence timed out, device dead, pins released", s.fence_timeouts == 1 && in.dev_dead == 1 &&
	      s.pins_held == 0, "timeouts %llu dead %u pins %lld", s.fence_timeouts, in.dev_dead, (long long)s.pins_held);
	CHECK("deadfence: REG refused with EIO", reg(fd, map_buf(4096), 4096, MYRIMX_ACCESS_SEND, &r) == -1 && errno == EIO,
	      "%s", strerror(errno));
	n = wait_one(fd, &ev, 1000);
	CHECK("deadfence: WAIT reports DEVICE_DEAD", n == 1 && ev.status == MYRIMX_WAIT_DEVICE_DEAD, "n %d status %u", n, ev.status);
	close(fd);
	check_pins("deadfence");
	return 0;
}

/* cmd_inflight: munmap a receive buffer while the peer's SEND is writing
 * into it, with bugs (0, or a MYRIMX_BUG_* mask; needs allow_bugs=1 when
 * nonzero). Correct: the RECV ends REGION_INVALIDATED with the bytes moved
 * and the audit stays at 0; NO_FENCE_WAIT / UNPIN_BEFORE_FENCE: chunks may
 * land after the pages were released (A5/A7), a race, not a certainty. */
static int cmd_inflight(const char *dir, size_t len, unsigned int bugs)
{
	struct myrimx_debug_bug bug = { .bugs = bugs };
	struct myrimx_event ev;
	struct myrimx_reg r;
	volatile unsigned char *buf;
	int fd = open_dev(), n;

	if (fd < 0)
		die("open");
	if (bugs && ioctl(fd, MYRIMX_IOC_DEBUG_BUG, &bug))
		die("DEBUG_BUG");
	buf = map_buf(len);
	memset((void *)buf, 0, len);
	if (reg(fd, (void *)buf, len, MYRIMX_ACCESS_RECV, &r))
		die("REG");
	{
		struct myrimx_info in;
		struct myrimx_recv rv;
		char text[128];

		ioctl(fd, MYRIMX_IOC_INFO, &in);
		memset(&rv, 0, sizeof(rv));
		rv.id = r.id;
		rv.generation = r.generation;
		rv.len = len;
		rv.match = 0x77;
		rv.mask = ~0ULL;
		if (ioctl(fd, MYRIMX_IOC_RECV, &rv))
			die("RECV");
		snprintf(text, sizeof(text), "%llx %u\n", (unsigned long long)in.nic_id, in.endpoint);
		publish(dir, "mx-peer", text);
	}
	for (long i = 0; i < 2000000000L && buf[0] == 0; i++)
		;
	munmap((void *)buf, len);
	n = wait_one(fd, &ev, 60000);
	printf("mxsmoke: inflight bugs %#x: RECV n %d status %u xfer %u of %zu\n", bugs, n, ev.status, ev.xfer_len, len);
	CHECK("inflight: RECV cut short by the invalidation", n == 1 && ev.status == MYRIMX_WAIT_REGION_INVALIDATED &&
	      ev.xfer_len < len, "status %u xfer %u", ev.status, ev.xfer_len);
	dereg(fd, r.id, r.generation);
	close(fd);
	check_pins("inflight");
	return 0;
}

int main(int argc, char **argv)
{
	const char *c = argc > 1 ? argv[1] : "";
	size_t len = argc > 3 ? strtoull(argv[3], NULL, 0) : 1 << 20;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(c, "info"))
		cmd_info();
	else if (!strcmp(c, "reg"))
		cmd_reg();
	else if (!strcmp(c, "munmap"))
		cmd_munmap();
	else if (!strcmp(c, "fork"))
		cmd_fork();
	else if (!strcmp(c, "recv") && argc > 2)
		cmd_recv(argv[2], len);
	else if (!strcmp(c, "send") && argc > 2)
		cmd_send(argv[2], len);
	else if (!strcmp(c, "stale") && argc > 2)
		cmd_stale(argv[2], len);
	else if (!strcmp(c, "race"))
		cmd_race(argc > 2 ? atoi(argv[2]) : 200);
	else if (!strcmp(c, "deadfence") && argc > 2)
		cmd_deadfence(argv[2]);
	else if (!strcmp(c, "inflight") && argc > 2)
		cmd_inflight(argv[2], len, argc > 4 ? strtoul(argv[4], NULL, 0) : 0);
	else if (!strcmp(c, "reasons"))
		cmd_reasons();
	else if (!strcmp(c, "exit"))
		cmd_exit();
	else if (!strcmp(c, "skipinv") && argc > 2)
		cmd_skipinv(argv[2], len);
	else {
		fprintf(stderr, "usage: mxsmoke info|reg|munmap|fork|reasons|exit|race [N]|deadfence BDF|inflight DIR LEN [BUGS]|recv DIR [LEN]|send DIR [LEN]|stale DIR [LEN]|skipinv DIR [LEN]\n");
		return 2;
	}
	printf("mxsmoke: %s: %s\n", c, failures ? "FAILED" : "OK");
	return failures ? 1 : 0;
}
