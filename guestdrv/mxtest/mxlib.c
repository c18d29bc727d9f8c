// SPDX-License-Identifier: GPL-2.0
/* mxlib.c - endpoints, ioctls, patterns, pins and the device registers. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include "mx.h"

struct verdict V;
int verbose;

void dbg(const char *fmt, ...)
{
	va_list ap;
	if (!verbose)
		return;
	va_start(ap, fmt);
	fprintf(stderr, "mxtest: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
}

void v_begin(const char *name)
{
	memset(&V, 0, sizeof(V));
	snprintf(V.name, sizeof(V.name), "%s", name);
}

static void v_append(const char *fmt, va_list ap)
{
	size_t n = strlen(V.detail);
	if (n + 2 >= sizeof(V.detail))
		return;
	if (n)
		V.detail[n++] = ' ';
	vsnprintf(V.detail + n, sizeof(V.detail) - n, fmt, ap);
	for (char *p = V.detail + n; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
}

void v_fact(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	v_append(fmt, ap);
	va_end(ap);
}

void v_fail(const char *fmt, ...)
{
	va_list ap;
	char buf[512];
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	for (char *p = buf; *p; p++)
		if (*p == ' ')
			*p = '_';
	v_fact("FAIL:%s", buf);
	V.failed = 1;
}

int v_end(void)
{
	printf("E2E-RESULT name=mx:%s status=%s detail=%s\n", V.name,
	       V.failed ? "fail" : V.info_only ? "info" : "pass", V.detail);
	fflush(stdout);
	return V.failed ? 1 : 0;
}

uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* /dev/myrimxN, made from sysfs if devtmpfs has not. */
static int open_node(int instance)
{
	char path[64], sys[128], buf[32];
	snprintf(path, sizeof(path), MYRIMX_DEV_PREFIX "%d", instance);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd >= 0 || errno != ENOENT)
		return fd;
	snprintf(sys, sizeof(sys), MYRIMX_SYSFS_CLASS "/myrimx%d/dev", instance);
	FILE *f = fopen(sys, "r");
	if (!f)
		return -1;
	unsigned maj, min;
	int ok = fgets(buf, sizeof(buf), f) && sscanf(buf, "%u:%u", &maj, &min) == 2;
	fclose(f);
	if (!ok || mknod(path, S_IFCHR | 0600, makedev(maj, min)) != 0) {
		errno = ENOENT;
		return -1;
	}
	return open(path, O_RDWR | O_CLOEXEC);
}

int ep_open(struct ep *e, int instance)
{
	memset(e, 0, sizeof(*e));
	e->fd = -1;
	e->instance = instance;
	int fd = open_node(instance);
	if (fd < 0) {
		v_fail("open /dev/myrimx%d: %s", instance, strerror(errno));
		return -1;
	}
	e->fd = fd;
	if (ioctl(fd, MYRIMX_IOC_INFO, &e->info) != 0) {
		v_fail("INFO: %s", strerror(errno));
		close(fd);
		e->fd = -1;
		return -1;
	}
	if (e->info.gen_map_size) {
		void *m = mmap(NULL, e->info.gen_map_size, PROT_READ, MAP_SHARED, fd, MYRIMX_GEN_MAP_OFFSET);
		if (m == MAP_FAILED) {
			v_fail("mmap gen map: %s", strerror(errno));
		} else {
			e->gen_map = m;
			e->gen_map_size = e->info.gen_map_size;
		}
	}
	dbg("opened myrimx%d endpoint %u nic %#llx mode %u audit %u", instance, e->info.endpoint,
	     (unsigned long long)e->info.nic_id, e->info.mode, e->info.audit_mode);
	return 0;
}

void ep_close(struct ep *e)
{
	if (e->gen_map)
		munmap((void *)e->gen_map, e->gen_map_size);
	if (e->fd >= 0)
		close(e->fd);
	e->fd = -1;
	e->gen_map = NULL;
}

int find_instance(int audit_mode)
{
	for (int i = 0; i < 8; i++) {
		int fd = open_node(i);
		if (fd < 0)
			continue;
		struct myrimx_info info;
		int ok = ioctl(fd, MYRIMX_IOC_INFO, &info) == 0;
		close(fd);
		if (ok && (int)info.audit_mode == audit_mode)
			return i;
	}
	return -1;
}

int mx_reg(struct ep *e, void *va, size_t len, uint32_t access, uint32_t flags, struct myrimx_reg *out)
{
	struct myrimx_reg r = {.va = (uintptr_t)va, .len = len, .access = access, .flags = flags};
	if (ioctl(e->fd, MYRIMX_IOC_REG, &r) != 0)
		return -errno;
	if (out)
		*out = r;
	dbg("REG %p+%zu -> id %u gen %u pages %u retries %u", va, len, r.id, r.generation, r.nr_pages, r.seq_retries);
	return 0;
}

int mx_dereg(struct ep *e, uint32_t id, uint32_t gen)
{
	struct myrimx_dereg d = {.id = id, .generation = gen};
	return ioctl(e->fd, MYRIMX_IOC_DEREG, &d) == 0 ? 0 : -errno;
}

int mx_send(struct ep *e, uint32_t id, uint32_t gen, uint64_t off, uint32_t len,
	    uint64_t nic, uint16_t dest_ep, uint64_t match, uint64_t cookie)
{
	return mx_send_f(e, id, gen, off, len, nic, dest_ep, match, cookie, 0);
}

int mx_send_f(struct ep *e, uint32_t id, uint32_t gen, uint64_t off, uint32_t len,
	      uint64_t nic, uint16_t dest_ep, uint64_t match, uint64_t cookie, uint32_t flags)
{
	struct myrimx_send s = {.id = id, .generation = gen, .offset = off, .len = len, .flags = flags,
				.dest_ep = dest_ep, .dest_nic = nic, .match = match, .cookie = cookie};
	return ioctl(e->fd, MYRIMX_IOC_SEND, &s) == 0 ? 0 : -errno;
}

int mx_recv(struct ep *e, uint32_t id, uint32_t gen, uint64_t off, uint32_t len,
	    uint64_t match, uint64_t mask, uint64_t cookie)
{
	return mx_recv_f(e, id, gen, off, len, match, mask, cookie, 0);
}

int mx_recv_f(struct ep *e, uint32_t id, uint32_t gen, uint64_t off, uint32_t len,
	      uint64_t match, uint64_t mask, uint64_t cookie, uint32_t flags)
{
	struct myrimx_recv r = {.id = id, .generation = gen, .offset = off, .len = len, .flags = flags,
				.match = match, .mask = mask, .cookie = cookie};
	return ioctl(e->fd, MYRIMX_IOC_RECV, &r) == 0 ? 0 : -errno;
}

int mx_wait_cookie(struct ep *e, uint64_t cookie, int timeout_ms, struct myrimx_event *ev)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	for (;;) {
		struct myrimx_event got;
		uint64_t now = now_ms();
		int left = now >= end ? 0 : (int)(end - now);
		struct myrimx_wait w = {.events = (uintptr_t)&got, .max = 1, .timeout_ms = left};
		if (ioctl(e->fd, MYRIMX_IOC_WAIT, &w) != 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w.count == 0) {
			if (now_ms() >= end)
				return -ETIMEDOUT;
			continue;
		}
		if (got.cookie == cookie && got.type != MYRIMX_EVENT_REGION_REVOKED) {
			*ev = got;
			dbg("completion cookie %llu type %u status %s xfer %u", (unsigned long long)cookie,
			     got.type, status_name(got.status), got.xfer_len);
			return 0;
		}
		dbg("other completion: type %u status %s cookie %llu region %u", got.type,
		     status_name(got.status), (unsigned long long)got.cookie, got.region_id);
	}
}

int mx_query(struct ep *e, uint32_t id, uint64_t *gpas, uint32_t max, struct myrimx_query_reg *q)
{
	memset(q, 0, sizeof(*q));
	q->id = id;
	q->gpas = (uintptr_t)gpas;
	q->max_gpas = gpas ? max : 0;
	return ioctl(e->fd, MYRIMX_IOC_QUERY_REG, q) == 0 ? 0 : -errno;
}

int mx_stats(struct ep *e, uint32_t scope, struct myrimx_stats *s)
{
	memset(s, 0, sizeof(*s));
	s->scope = scope;
	return ioctl(e->fd, MYRIMX_IOC_STATS, s) == 0 ? 0 : -errno;
}

int mx_stats_global(struct myrimx_stats *s)
{
	struct ep e;
	int fd = open_node(0);
	if (fd < 0)
		return -errno;
	e.fd = fd;
	int rc = mx_stats(&e, MYRIMX_STATS_GLOBAL, s);
	close(fd);
	return rc;
}

int mx_bug(struct ep *e, uint32_t bugs)
{
	struct myrimx_debug_bug b = {.bugs = bugs};
	return ioctl(e->fd, MYRIMX_IOC_DEBUG_BUG, &b) == 0 ? 0 : -errno;
}

int mx_gen_valid(struct ep *e, uint32_t id, uint32_t gen)
{
	if (!e->gen_map || (size_t)id * 4 >= e->gen_map_size)
		return -1;
	return myrimx_gen_valid(e->gen_map, id, gen);
}

static volatile uint32_t *bar0(int instance)
{
	static volatile uint32_t *maps[8];
	if (instance < 0 || instance >= 8)
		return NULL;
	if (maps[instance])
		return maps[instance];
	char path[128];
	snprintf(path, sizeof(path), MYRIMX_SYSFS_CLASS "/myrimx%d/device/resource0", instance);
	int fd = open(path, O_RDWR | O_SYNC | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	void *m = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return NULL;
	maps[instance] = m;
	return m;
}

long audit_count(int instance)
{
	volatile uint32_t *r = bar0(instance);
	return r ? (long)r[MYRIMX_REG_AUDIT_COUNT / 4] : -1;
}

int bar_poke(int instance, uint32_t off, uint32_t val)
{
	volatile uint32_t *r = bar0(instance);
	if (!r || off >= PAGE)
		return -1;
	r[off / 4] = val;
	(void)r[MYRIMX_REG_MAGIC / 4]; /* a read flushes the posted write */
	return 0;
}

void *map_anon(size_t len, int shared)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		v_fail("mmap %zu: %s", len, strerror(errno));
		return NULL;
	}
	return p;
}

static inline uint64_t pat(uint64_t seed, uint64_t k)
{
	uint64_t x = (seed + 1) * 0x9e3779b97f4a7c15ULL ^ (k * 0xbf58476d1ce4e5b9ULL);
	return x ^ (x >> 31);
}

/* A pattern of 64-bit words, a function of the seed and the word's index:
 * a page that landed elsewhere or a stale byte is caught. */
void fill(void *p, size_t len, uint64_t seed)
{
	uint64_t *w = p;
	for (size_t k = 0; k < len / 8; k++)
		w[k] = pat(seed, k);
}

long check(const void *p, size_t len, uint64_t seed)
{
	const uint64_t *w = p;
	for (size_t k = 0; k < len / 8; k++)
		if (w[k] != pat(seed, k))
			return (long)(k * 8);
	return -1;
}

long check_zero(const void *p, size_t len)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < len; i++)
		if (b[i])
			return (long)i;
	return -1;
}

uint64_t va_to_gpa(const void *va)
{
	static int fd = -1;
	if (fd < 0)
		fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	uint64_t ent;
	if (fd < 0 || pread(fd, &ent, 8, ((uintptr_t)va / PAGE) * 8) != 8)
		return 0;
	if (!(ent >> 63))
		return 0;
	return (ent & ((1ULL << 55) - 1)) * PAGE;
}

void vmstat_pins(uint64_t *acq, uint64_t *rel)
{
	char line[128];
	*acq = *rel = 0;
	FILE *f = fopen("/proc/vmstat", "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long v;
		if (sscanf(line, "nr_foll_pin_acquired %llu", &v) == 1)
			*acq = v;
		else if (sscanf(line, "nr_foll_pin_released %llu", &v) == 1)
			*rel = v;
	}
	fclose(f);
}

static const char *reasons[] = {"UNMAP", "CLEAR", "PROTECTION_VMA", "PROTECTION_PAGE", "SOFT_DIRTY",
				"RELEASE", "MIGRATE", "EXCLUSIVE", "USER", "DMA_UNMAP", "RESET", "INV_SYNC"};

const char *reason_name(int r)
{
	if (r >= 0 && r < (int)(sizeof(reasons) / sizeof(reasons[0])))
		return reasons[r];
	return r == MYRIMX_REASON_NONE ? "NONE" : "?";
}

static const char *statuses[] = {"OK", "TRUNCATED", "CANCELLED", "BAD_RDMAWIN", "REGION_INVALIDATED",
				 "ACCESS", "BAD_ENDPOINT", "ENDPOINT_CLOSED", "NO_RESOURCES", "DMA_FAULT",
				 "BUSY", "BAD_ADDRESS", "BAD_COMMAND", "NOT_FOUND"};

const char *status_name(int s)
{
	if (s >= 0 && s < (int)(sizeof(statuses) / sizeof(statuses[0])))
		return statuses[s];
	if (s == MYRIMX_WAIT_DEVICE_DEAD)
		return "DEVICE_DEAD";
	if (s == MYRIMX_WAIT_EVENTQ_FULL)
		return "EVENTQ_FULL";
	return "?";
}

void snap_take(struct snap *s, int instance)
{
	s->audit = audit_count(instance);
	vmstat_pins(&s->pin_acq, &s->pin_rel);
}

uint64_t g_inv(int reason)
{
	struct myrimx_stats s;
	return mx_stats_global(&s) == 0 ? s.invalidations[reason] : 0;
}

uint64_t g_cb(int reason)
{
	struct myrimx_stats s;
	return mx_stats_global(&s) == 0 ? s.callbacks[reason] : 0;
}

void snap_finish(const struct snap *before, int instance)
{
	struct myrimx_stats s;
	uint64_t acq, rel;
	long a = audit_count(instance);
	/* Unpinning may finish just after close returns (a release path that
	 * waits for the device): give it a bounded moment before judging. */
	uint64_t t0 = now_ms();
	vmstat_pins(&acq, &rel);
	while (acq != rel && now_ms() - t0 < 5000) {
		usleep(50000);
		vmstat_pins(&acq, &rel);
	}
	if (now_ms() - t0 > 50)
		v_fact("pins_settled_ms=%llu", (unsigned long long)(now_ms() - t0));
	v_fact("audit=%ld audit_before=%ld audit_after=%ld", (a >= 0 && before->audit >= 0) ? a - before->audit : -1,
	       before->audit, a);
	/* serve sends at most 50 DMA_AUDIT events a second per process and
	 * folds the rest into the next one: a pause after a scenario that
	 * had violations keeps the next scenario's events in a fresh second,
	 * so the host can attribute every event to its window. */
	if (a > before->audit && before->audit >= 0)
		usleep(1200 * 1000);
	v_fact("pins_acquired=%llu pins_released=%llu", (unsigned long long)(acq - before->pin_acq),
	       (unsigned long long)(rel - before->pin_rel));
	CHECK(acq == rel, "vmstat pins unbalanced after teardown: nr_foll_pin_acquired=%llu nr_foll_pin_released=%llu",
	      (unsigned long long)acq, (unsigned long long)rel);
	if (mx_stats_global(&s) == 0) {
		for (int r = 0; r < MYRIMX_NR_REASONS; r++)
			if (s.invalidations[r] || s.callbacks[r])
				v_fact("inv_%s=%llu cb_%s=%llu", reason_name(r), (unsigned long long)s.invalidations[r],
				       reason_name(r), (unsigned long long)s.callbacks[r]);
		v_fact("spurious=%llu seq_retries=%llu dereg=%llu fences=%llu fence_us_max=%llu fence_timeouts=%llu pins_held=%llu bugs_applied=%llu",
		       (unsigned long long)s.spurious, (unsigned long long)s.seq_retries,
		       (unsigned long long)s.dereg, (unsigned long long)s.fences,
		       (unsigned long long)(s.fence_ns_max / 1000), (unsigned long long)s.fence_timeouts,
		       (unsigned long long)s.pins_held, (unsigned long long)s.bugs_applied);
		CHECK(s.pins_held == 0, "the module still holds %llu pins", (unsigned long long)s.pins_held);
	} else {
		v_fail("STATS global: %s", strerror(errno));
	}
}
