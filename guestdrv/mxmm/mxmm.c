// SPDX-License-Identifier: GPL-2.0
/*
 * mxmm: zero-copy scenarios 12, 13 and 14 of zero-copy-design.md 6.10, the
 * three that move or take away a registered page behind the user's back:
 *
 *   mxmm move-pages   12: move_pages(2) of registered pages to node 1
 *   mxmm hmm-migrate  13: migrate_vma_setup over them (helper myrimx_mm)
 *   mxmm exclusive    14: make_device_exclusive of one page (helper myrimx_mm)
 *   mxmm helper       the helper alone, no myrimx: contents and PFNs kept
 *   mxmm pins         nr_foll_pin_acquired == nr_foll_pin_released
 *
 * Each scenario registers an mmap'ed buffer with /dev/myrimx0 (notifier
 * mode), does the action, and prints as E2E-RESULT lines: the per-reason
 * invalidation counters of the driver's STATS (endpoint scope, as deltas),
 * the region's state and last reason (QUERY_REG), where the pages are
 * (move_pages status, and the NUMA node of each registered GPA), the
 * registration GPAs before and after re-registering, and the data: the
 * buffer's pattern, and a SEND of it through the card to a second endpoint
 * of the same NIC, whose receive buffer must then hold the same bytes.
 * Lines with status pass/fail are the guest's own assertions; info lines
 * carry key=value facts for the host test.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <linux/mempolicy.h>

#include <myrimx_abi.h>   /* MYRIMX_REASON_*: STATS is indexed by them */
#include <myrimx_ioctl.h>
#include <myrimx_mm_ioctl.h>

#define NPAGES     16
#define PAGE       4096UL
#define BUF_LEN    (NPAGES * PAGE)
#define EXCL_PAGE  5  /* the page scenario 14 takes */
#define WAIT_MS    30000

static int failures;

static void result(const char *name, const char *status, const char *fmt, ...)
{
	char detail[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	if (!strcmp(status, "fail"))
		failures++;
	printf("E2E-RESULT name=%s status=%s detail=%s\n", name, status, detail);
	fflush(stdout);
}

static void check(const char *name, int ok, const char *fmt, ...)
{
	char detail[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	result(name, ok ? "pass" : "fail", "%s", detail);
}

/* ---- device nodes ---------------------------------------------------- */

/* open_node opens path, creating it first from sysfs "major:minor" when
 * the initramfs's /dev lacks it (no udev). */
static int open_node(const char *path, const char *sysdev)
{
	unsigned int maj, min;
	FILE *f;
	int fd = open(path, O_RDWR | O_CLOEXEC);

	if (fd >= 0 || errno != ENOENT)
		return fd;
	f = fopen(sysdev, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%u:%u", &maj, &min) != 2) {
		fclose(f);
		errno = EINVAL;
		return -1;
	}
	fclose(f);
	if (mknod(path, S_IFCHR | 0600, makedev(maj, min)) && errno != EEXIST)
		return -1;
	return open(path, O_RDWR | O_CLOEXEC);
}

static int open_mx(void)
{
	return open_node(MYRIMX_DEV_PREFIX "0", MYRIMX_SYSFS_CLASS "/myrimx0/dev");
}

static int open_helper(void)
{
	return open_node(MYRIMX_MM_DEVICE, "/sys/class/misc/myrimx_mm/dev");
}

/* ---- facts from /proc and /sys -------------------------------------- */

static long long vmstat(const char *key)
{
	char name[128];
	long long v;
	FILE *f = fopen("/proc/vmstat", "r");

	if (!f)
		return -1;
	while (fscanf(f, "%127s %lld", name, &v) == 2) {
		if (!strcmp(name, key)) {
			fclose(f);
			return v;
		}
	}
	fclose(f);
	return -1;
}

/* gpa_node is the NUMA node whose memory block holds gpa, or -1. */
static int gpa_node(uint64_t gpa)
{
	static unsigned long long block;
	char path[128];
	int n;

	if (!block) {
		FILE *f = fopen("/sys/devices/system/memory/block_size_bytes", "r");

		if (!f || fscanf(f, "%llx", &block) != 1 || !block) {
			if (f)
				fclose(f);
			block = 0;
			return -1;
		}
		fclose(f);
	}
	for (n = 0; n < 8; n++) {
		snprintf(path, sizeof(path), "/sys/devices/system/node/node%d/memory%llu", n,
			 (unsigned long long)(gpa / block));
		if (access(path, F_OK) == 0)
			return n;
	}
	return -1;
}

static int online_nodes(void)
{
	char buf[64] = "";
	int a, b;
	FILE *f = fopen("/sys/devices/system/node/has_memory", "r");

	if (!f)
		return 0;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	if (sscanf(buf, "%d-%d", &a, &b) == 2)
		return b - a + 1;
	return sscanf(buf, "%d", &a) == 1 ? 1 : 0;
}

/* audit_count reads the card's AUDIT_COUNT register: the device's own
 * count of DMA audit violations, so that a scenario can bracket its
 * window. The driver's INFO returns it; a module without that field
 * leaves info_flags 0 and BAR0 of myrimx0 is mapped through sysfs instead
 * (which needs iomem=relaxed while the driver holds the BAR). -1 if
 * unreadable. */
static int audit_errno;

static long audit_count(void)
{
	static volatile const uint32_t *regs;
	struct myrimx_info info = { 0 };
	int fd = open_mx();

	if (fd >= 0) {
		int err = ioctl(fd, MYRIMX_IOC_INFO, &info);

		audit_errno = err ? errno : 0;
		close(fd);
		if (!err && (info.info_flags & MYRIMX_INFO_AUDIT_COUNT))
			return info.audit_count;
	}
	if (!regs) {
		int fd = open(MYRIMX_SYSFS_CLASS "/myrimx0/device/resource0", O_RDWR | O_SYNC | O_CLOEXEC);
		void *m;

		if (fd < 0) {
			audit_errno = errno;
			return -1;
		}
		m = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0);
		audit_errno = errno;
		close(fd);
		if (m == MAP_FAILED)
			return -1;
		regs = m;
	}
	return regs[MYRIMX_REG_AUDIT_COUNT / 4];
}

static long move_pages(int n, void **pages, const int *nodes, int *status)
{
	return syscall(SYS_move_pages, 0, (unsigned long)n, pages, nodes, status, MPOL_MF_MOVE);
}

/* ---- buffers --------------------------------------------------------- */

static uint8_t *map_buf(void)
{
	uint8_t *p = mmap(NULL, BUF_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	/* Small pages: THP would make one folio of the buffer, and the
	 * migrate and exclusive paths split or skip large folios. */
	madvise(p, BUF_LEN, MADV_NOHUGEPAGE);
	return p;
}

static uint8_t pattern(unsigned int seed, size_t i)
{
	return (uint8_t)(seed * 131 + i * 7 + (i >> 12));
}

static void fill(uint8_t *p, unsigned int seed)
{
	for (size_t i = 0; i < BUF_LEN; i++)
		p[i] = pattern(seed, i);
}

/* bad_bytes counts the bytes of p that differ from the pattern. */
static size_t bad_bytes(const uint8_t *p, unsigned int seed)
{
	size_t bad = 0;

	for (size_t i = 0; i < BUF_LEN; i++)
		bad += p[i] != pattern(seed, i);
	return bad;
}

/* ---- the driver ------------------------------------------------------ */

struct reg {
	uint32_t id, gen;
};

static int mx_reg(int fd, void *va, uint32_t access, struct reg *r)
{
	struct myrimx_reg a = { .va = (uintptr_t)va, .len = BUF_LEN, .access = access };

	if (ioctl(fd, MYRIMX_IOC_REG, &a))
		return -errno;
	r->id = a.id;
	r->gen = a.generation;
	return 0;
}

static int mx_dereg(int fd, struct reg r)
{
	struct myrimx_dereg a = { .id = r.id, .generation = r.gen };

	return ioctl(fd, MYRIMX_IOC_DEREG, &a) ? -errno : 0;
}

/* mx_query fills q and the region's GPAs (NPAGES of them). */
static int mx_query(int fd, uint32_t id, struct myrimx_query_reg *q, uint64_t *gpas)
{
	memset(q, 0, sizeof(*q));
	q->id = id;
	q->max_gpas = NPAGES;
	q->gpas = (uintptr_t)gpas;
	return ioctl(fd, MYRIMX_IOC_QUERY_REG, q) ? -errno : 0;
}

static int mx_stats(int fd, struct myrimx_stats *s)
{
	memset(s, 0, sizeof(*s));
	s->scope = MYRIMX_STATS_ENDPOINT;
	return ioctl(fd, MYRIMX_IOC_STATS, s) ? -errno : 0;
}

static const char *const reason_names[] = {
	"unmap", "clear", "protection_vma", "protection_page", "soft_dirty",
	"release", "migrate", "exclusive", "user",
};
#define NR_NAMED (sizeof(reason_names) / sizeof(reason_names[0]))

static const char *reason_name(uint32_t r)
{
	if (r == MYRIMX_REASON_NONE)
		return "none";
	return r < NR_NAMED ? reason_names[r] : "other";
}

/* print_reasons prints the per-reason deltas of invalidations (registrations
 * revoked) and callbacks (every notifier call) between two STATS. */
static void print_reasons(const char *name, const struct myrimx_stats *a, const struct myrimx_stats *b)
{
	char buf[900];
	int n = 0;

	for (unsigned int i = 0; i < NR_NAMED; i++)
		n += snprintf(buf + n, sizeof(buf) - n, "inv_%s=%llu cb_%s=%llu ", reason_names[i],
			      (unsigned long long)(b->invalidations[i] - a->invalidations[i]), reason_names[i],
			      (unsigned long long)(b->callbacks[i] - a->callbacks[i]));
	snprintf(buf + n, sizeof(buf) - n, "spurious=%llu fences=%llu fence_timeouts=%llu",
		 (unsigned long long)(b->spurious - a->spurious),
		 (unsigned long long)(b->fences - a->fences),
		 (unsigned long long)(b->fence_timeouts - a->fence_timeouts));
	result(name, "info", "%s", buf);
}

static uint64_t delta(const struct myrimx_stats *a, const struct myrimx_stats *b, int reason, int inv)
{
	return inv ? b->invalidations[reason] - a->invalidations[reason]
		   : b->callbacks[reason] - a->callbacks[reason];
}

static void print_gpas(const char *name, const uint64_t *gpas, int n)
{
	char buf[900];
	int off = 0;

	for (int i = 0; i < n && off < (int)sizeof(buf) - 40; i++)
		off += snprintf(buf + off, sizeof(buf) - off, "%s%#" PRIx64 "@%d", i ? "," : "gpas=", gpas[i],
				gpa_node(gpas[i]));
	result(name, "info", "%s", off ? buf : "gpas=");
}

/* transfer SENDs the whole registration (src on fd) to a RECV of recv_reg
 * on rfd (another endpoint of the same NIC) and waits for both completions;
 * it returns 0 when both completed OK with every byte. */
static int transfer(const char *name, int fd, struct reg src, int rfd, struct reg dst, uint64_t cookie)
{
	struct myrimx_info ri;
	struct myrimx_recv rv = { .id = dst.id, .generation = dst.gen, .len = BUF_LEN,
				  .match = cookie, .mask = ~0ULL, .cookie = cookie };
	struct myrimx_send sd = { .id = src.id, .generation = src.gen, .len = BUF_LEN,
				  .match = cookie, .cookie = cookie };
	char evname[80];
	int ok = 0;

	snprintf(evname, sizeof(evname), "%s-event", name);
	if (ioctl(rfd, MYRIMX_IOC_INFO, &ri)) {
		result(name, "fail", "INFO: %s", strerror(errno));
		return -1;
	}
	sd.dest_ep = ri.endpoint;
	sd.dest_nic = ri.nic_id;
	if (ioctl(rfd, MYRIMX_IOC_RECV, &rv) || ioctl(fd, MYRIMX_IOC_SEND, &sd)) {
		result(name, "fail", "post: %s", strerror(errno));
		return -1;
	}
	for (int side = 0; side < 2; side++) {
		struct myrimx_event ev[4];
		struct myrimx_wait w = { .events = (uintptr_t)ev, .max = 1, .timeout_ms = WAIT_MS };

		if (ioctl(side ? rfd : fd, MYRIMX_IOC_WAIT, &w) || w.count != 1) {
			result(name, "fail", "WAIT %s: count=%u %s", side ? "recv" : "send", w.count, strerror(errno));
			return -1;
		}
		if (ev[0].status == MYRIMX_WAIT_OK && ev[0].xfer_len == BUF_LEN && ev[0].cookie == cookie)
			ok++;
		result(evname, "info", "side=%s type=%u status=%u xfer_len=%u cookie=%llu",
		       side ? "recv" : "send", ev[0].type, ev[0].status, ev[0].xfer_len,
		       (unsigned long long)ev[0].cookie);
	}
	return ok == 2 ? 0 : -1;
}

/* ---- the scenarios ---------------------------------------------------- */

struct fixture {
	int fd, rfd;     /* two endpoints of /dev/myrimx0 */
	uint8_t *buf;    /* registered, SEND source */
	uint8_t *rbuf;   /* RECV destination on rfd */
	struct reg reg, rreg;
	uint64_t gpas[NPAGES];
	struct myrimx_stats before;
	long audit_before;
};

static int setup(const char *sc, struct fixture *f, unsigned int seed)
{
	struct myrimx_query_reg q;
	char name[64];
	int err;

	memset(f, 0, sizeof(*f));
	f->audit_before = audit_count();
	snprintf(name, sizeof(name), "%s:setup", sc);
	f->fd = open_mx();
	f->rfd = open_mx();
	if (f->fd < 0 || f->rfd < 0) {
		result(name, "fail", "open " MYRIMX_DEV_PREFIX "0: %s", strerror(errno));
		return -1;
	}
	f->buf = map_buf();
	f->rbuf = map_buf();
	if (!f->buf || !f->rbuf) {
		result(name, "fail", "mmap: %s", strerror(errno));
		return -1;
	}
	fill(f->buf, seed);
	memset(f->rbuf, 0, BUF_LEN);
	err = mx_reg(f->fd, f->buf, MYRIMX_ACCESS_SEND | MYRIMX_ACCESS_RECV, &f->reg);
	if (!err)
		err = mx_reg(f->rfd, f->rbuf, MYRIMX_ACCESS_RECV, &f->rreg);
	if (!err)
		err = mx_query(f->fd, f->reg.id, &q, f->gpas);
	if (err) {
		result(name, "fail", "REG/QUERY_REG: %s", strerror(-err));
		return -1;
	}
	result(name, "info", "id=%u gen=%u pages=%u state=%u va=%p", f->reg.id, f->reg.gen, q.nr_pages,
	       q.state, (void *)f->buf);
	snprintf(name, sizeof(name), "%s:gpas-before", sc);
	print_gpas(name, f->gpas, NPAGES);
	return mx_stats(f->fd, &f->before);
}

/* after_action checks what every scenario expects of the driver once the
 * kernel acted on the buffer: the registration revoked for reason, and no
 * other reason counted; then it re-registers, prints the new GPAs into
 * gpas, checks the data and moves it through the card. */
static void after_action(const char *sc, struct fixture *f, int reason, unsigned int seed, uint64_t *gpas)
{
	struct myrimx_stats after;
	struct myrimx_query_reg q;
	uint64_t old[NPAGES];
	char name[64];
	int err;

	snprintf(name, sizeof(name), "%s:reasons", sc);
	if (mx_stats(f->fd, &after)) {
		result(name, "fail", "STATS: %s", strerror(errno));
		return;
	}
	print_reasons(name, &f->before, &after);
	snprintf(name, sizeof(name), "%s:revoked", sc);
	{
		uint64_t others = 0;

		for (unsigned int i = 0; i < NR_NAMED; i++)
			if ((int)i != reason)
				others += delta(&f->before, &after, i, 1);
		check(name, delta(&f->before, &after, reason, 1) == 1 && others == 0,
		      "reason=%s invalidations=%llu other_invalidations=%llu", reason_name(reason),
		      (unsigned long long)delta(&f->before, &after, reason, 1), (unsigned long long)others);
	}
	err = mx_query(f->fd, f->reg.id, &q, old);
	snprintf(name, sizeof(name), "%s:query", sc);
	check(name, !err && q.state == MYRIMX_REGION_INVALID && q.last_reason == (uint32_t)reason && q.pins == 0,
	      "state=%u last_reason=%s pins=%u err=%d", q.state, reason_name(q.last_reason), q.pins, err);

	snprintf(name, sizeof(name), "%s:data", sc);
	{
		size_t bad = bad_bytes(f->buf, seed);

		check(name, bad == 0, "bad_bytes=%zu of %lu", bad, BUF_LEN);
	}

	/* DEREG of the revoked registration frees its slot; REG again. */
	snprintf(name, sizeof(name), "%s:reregister", sc);
	err = mx_dereg(f->fd, f->reg);
	if (!err)
		err = mx_reg(f->fd, f->buf, MYRIMX_ACCESS_SEND | MYRIMX_ACCESS_RECV, &f->reg);
	if (!err)
		err = mx_query(f->fd, f->reg.id, &q, gpas);
	check(name, !err && q.state == MYRIMX_REGION_VALID, "err=%d id=%u gen=%u state=%u", err, f->reg.id,
	      f->reg.gen, q.state);
	if (err)
		return;
	snprintf(name, sizeof(name), "%s:gpas-after", sc);
	print_gpas(name, gpas, NPAGES);

	snprintf(name, sizeof(name), "%s:send", sc);
	err = transfer(name, f->fd, f->reg, f->rfd, f->rreg, 0x5c000000u + (unsigned int)reason);
	{
		size_t bad = bad_bytes(f->rbuf, seed);

		check(name, !err && bad == 0, "transfer=%d receiver_bad_bytes=%zu", err, bad);
	}
}

static void teardown(const char *sc, struct fixture *f)
{
	char name[64];
	int e1 = mx_dereg(f->fd, f->reg), e2 = mx_dereg(f->rfd, f->rreg);

	snprintf(name, sizeof(name), "%s:teardown", sc);
	check(name, !e1 && !e2, "dereg=%d,%d", e1, e2);
	close(f->fd);
	close(f->rfd);
	munmap(f->buf, BUF_LEN);
	munmap(f->rbuf, BUF_LEN);
	{
		long after = audit_count();

		snprintf(name, sizeof(name), "%s:audit", sc);
		if (f->audit_before < 0 || after < 0)
			/* CONFIG_IO_STRICT_DEVMEM refuses to map a BAR a driver
			 * holds: the host's query-dma-audit is then the check. */
			result(name, "info", "audit_before=%ld audit_after=%ld (AUDIT_COUNT not readable: %s)",
			       f->audit_before, after, strerror(audit_errno));
		else
			check(name, after == f->audit_before,
			      "audit_before=%ld audit_after=%ld (the device's AUDIT_COUNT over the scenario)",
			      f->audit_before, after);
	}
}

/* 12: move_pages to node 1. The kernel unmaps each page (try_to_migrate:
 * MMU_NOTIFY_CLEAR); the driver revokes and unpins in the callback, after
 * which the migration can go on. Whether a page moved is up to the kernel;
 * what must hold either way: reason CLEAR, the data intact, and each
 * re-registered GPA on the node move_pages says the page is on. */
static int scenario_move_pages(void)
{
	const char *sc = "mm12";
	struct fixture f;
	void *pages[NPAGES];
	int nodes[NPAGES], status[NPAGES], now[NPAGES];
	uint64_t gpas[NPAGES];
	int n = online_nodes(), moved = 0, agree = 0;
	long ret;

	if (n < 2) {
		result("mm12:skip", "info", "nodes_with_memory=%d: move_pages needs a two-node guest", n);
		return 0;
	}
	if (setup(sc, &f, 12))
		return 1;
	for (int i = 0; i < NPAGES; i++) {
		pages[i] = f.buf + i * PAGE;
		nodes[i] = 1;
		status[i] = -1;
	}
	ret = move_pages(NPAGES, pages, NULL, now);
	result("mm12:nodes-before", "info", "ret=%ld page0=%d page%d=%d", ret, now[0], NPAGES - 1,
	       now[NPAGES - 1]);
	ret = move_pages(NPAGES, pages, nodes, status);
	{
		char buf[256];
		int off = 0;

		for (int i = 0; i < NPAGES; i++)
			off += snprintf(buf + off, sizeof(buf) - off, "%s%d", i ? "," : "", status[i]);
		result("mm12:move", "info", "ret=%ld errno=%d status=%s", ret, ret < 0 ? errno : 0, buf);
	}
	after_action(sc, &f, MYRIMX_REASON_CLEAR, 12, gpas);
	ret = move_pages(NPAGES, pages, NULL, now);
	for (int i = 0; i < NPAGES; i++) {
		moved += now[i] == 1;
		agree += now[i] == gpa_node(gpas[i]);
	}
	result("mm12:placement", "info", "moved=%d of %d", moved, NPAGES);
	check("mm12:gpa-node", ret == 0 && agree == NPAGES,
	      "pages whose re-registered GPA lies on the node move_pages reports: %d of %d", agree, NPAGES);
	teardown(sc, &f);
	return 0;
}

/* 13: HMM migration by another driver (the helper): MMU_NOTIFY_MIGRATE
 * with the helper's owner. No destination is offered, so the pages stay:
 * the re-registered GPAs are the old ones. */
static int scenario_hmm_migrate(void)
{
	const char *sc = "mm13";
	struct fixture f;
	struct myrimx_mm_migrate m;
	uint64_t gpas[NPAGES];
	int hfd = open_helper(), same = 0;

	if (hfd < 0) {
		result("mm13:setup", "fail", "open " MYRIMX_MM_DEVICE ": %s", strerror(errno));
		return 1;
	}
	if (setup(sc, &f, 13))
		return 1;
	m = (struct myrimx_mm_migrate){ .va = (uintptr_t)f.buf, .len = BUF_LEN };
	if (ioctl(hfd, MYRIMX_MM_MIGRATE, &m))
		result("mm13:migrate", "fail", "MYRIMX_MM_MIGRATE: %s", strerror(errno));
	else
		result("mm13:migrate", "info", "npages=%llu cpages=%llu migrated=%llu restored=%llu",
		       (unsigned long long)m.npages, (unsigned long long)m.cpages,
		       (unsigned long long)m.migrated, (unsigned long long)m.restored);
	after_action(sc, &f, MYRIMX_REASON_MIGRATE, 13, gpas);
	for (int i = 0; i < NPAGES; i++)
		same += gpas[i] == f.gpas[i];
	check("mm13:same-gpas", same == NPAGES, "re-registered GPAs equal to the first ones: %d of %d", same,
	      NPAGES);
	teardown(sc, &f);
	close(hfd);
	return 0;
}

/* 14: device-exclusive of one page by another driver: MMU_NOTIFY_EXCLUSIVE
 * for that page, which overlaps the registration and revokes all of it. The
 * helper faults the page back (on 7.2 a CLEAR callback, which finds nothing
 * valid left). Then the same with the CPU's own touch restoring it. */
static int scenario_exclusive(void)
{
	const char *sc = "mm14";
	struct fixture f;
	struct myrimx_mm_exclusive x;
	uint64_t gpas[NPAGES];
	int hfd = open_helper(), same = 0;

	if (hfd < 0) {
		result("mm14:setup", "fail", "open " MYRIMX_MM_DEVICE ": %s", strerror(errno));
		return 1;
	}
	if (setup(sc, &f, 14))
		return 1;
	x = (struct myrimx_mm_exclusive){ .va = (uintptr_t)(f.buf + EXCL_PAGE * PAGE), .npages = 1 };
	if (ioctl(hfd, MYRIMX_MM_EXCLUSIVE, &x))
		result("mm14:exclusive", "fail", "MYRIMX_MM_EXCLUSIVE: %s", strerror(errno));
	else
		check("mm14:exclusive", x.error == 0 && x.converted == 1 && x.restored == 1,
		      "page=%d converted=%llu restored=%llu error=%d", EXCL_PAGE,
		      (unsigned long long)x.converted, (unsigned long long)x.restored, x.error);
	after_action(sc, &f, MYRIMX_REASON_EXCLUSIVE, 14, gpas);
	for (int i = 0; i < NPAGES; i++)
		same += gpas[i] == f.gpas[i];
	check("mm14:same-gpas", same == NPAGES, "re-registered GPAs equal to the first ones: %d of %d", same,
	      NPAGES);

	/* Variant: the entry is left in place and the CPU's read restores it. */
	if (mx_stats(f.fd, &f.before) == 0) {
		struct myrimx_stats after;
		volatile uint8_t *p = f.buf + EXCL_PAGE * PAGE;
		uint8_t v;

		x = (struct myrimx_mm_exclusive){ .va = (uintptr_t)p, .npages = 1, .flags = MYRIMX_MM_EXCL_LEAVE };
		if (ioctl(hfd, MYRIMX_MM_EXCLUSIVE, &x))
			result("mm14:leave", "fail", "MYRIMX_MM_EXCLUSIVE leave: %s", strerror(errno));
		v = *p; /* the fault that removes the device-exclusive entry */
		mx_stats(f.fd, &after);
		print_reasons("mm14:leave-reasons", &f.before, &after);
		check("mm14:leave", x.converted == 1 && x.restored == 0 &&
		      v == pattern(14, EXCL_PAGE * PAGE) && delta(&f.before, &after, MYRIMX_REASON_EXCLUSIVE, 1) == 1,
		      "converted=%llu restored=%llu byte_ok=%d inv_exclusive=%llu",
		      (unsigned long long)x.converted, (unsigned long long)x.restored,
		      v == pattern(14, EXCL_PAGE * PAGE),
		      (unsigned long long)delta(&f.before, &after, MYRIMX_REASON_EXCLUSIVE, 1));
		/* the registration is revoked again; re-register for teardown */
		mx_dereg(f.fd, f.reg);
		mx_reg(f.fd, f.buf, MYRIMX_ACCESS_SEND | MYRIMX_ACCESS_RECV, &f.reg);
	}
	teardown(sc, &f);
	close(hfd);
	return 0;
}

/* helper: the helper module alone (no myrimx): both ioctls keep the data
 * and the pages (the PFNs from /proc/self/pagemap do not change). */
static uint64_t pfn_of(const void *va)
{
	uint64_t e = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	if (pread(fd, &e, 8, (off_t)((uintptr_t)va / PAGE) * 8) != 8)
		e = 0;
	close(fd);
	return (e & (1ULL << 63)) ? e & ((1ULL << 55) - 1) : 0;
}

static int scenario_helper(void)
{
	struct myrimx_mm_migrate m;
	struct myrimx_mm_exclusive x;
	uint64_t before[NPAGES], after[NPAGES];
	uint8_t *buf = map_buf();
	int hfd = open_helper(), same = 0, err;

	if (hfd < 0 || !buf) {
		result("helper:setup", "fail", "open " MYRIMX_MM_DEVICE " / mmap: %s", strerror(errno));
		return 1;
	}
	fill(buf, 7);
	for (int i = 0; i < NPAGES; i++)
		before[i] = pfn_of(buf + i * PAGE);
	/* (each ioctl runs before check() reads its results: argument
	 * evaluation order is unspecified) */
	m = (struct myrimx_mm_migrate){ .va = (uintptr_t)buf, .len = BUF_LEN };
	err = ioctl(hfd, MYRIMX_MM_MIGRATE, &m) ? errno : 0;
	check("helper:migrate", !err && m.npages == NPAGES && m.migrated == 0 && m.restored == m.cpages,
	      "npages=%llu cpages=%llu migrated=%llu restored=%llu errno=%d", (unsigned long long)m.npages,
	      (unsigned long long)m.cpages, (unsigned long long)m.migrated, (unsigned long long)m.restored,
	      err);
	x = (struct myrimx_mm_exclusive){ .va = (uintptr_t)buf, .npages = NPAGES };
	err = ioctl(hfd, MYRIMX_MM_EXCLUSIVE, &x) ? errno : 0;
	check("helper:exclusive", !err && x.converted == NPAGES && x.restored == NPAGES && x.error == 0,
	      "converted=%llu restored=%llu error=%d errno=%d", (unsigned long long)x.converted,
	      (unsigned long long)x.restored, x.error, err);
	for (int i = 0; i < NPAGES; i++) {
		after[i] = pfn_of(buf + i * PAGE);
		same += after[i] && after[i] == before[i];
	}
	check("helper:pages-kept", same == NPAGES, "same_pfn=%d of %d", same, NPAGES);
	check("helper:data", bad_bytes(buf, 7) == 0, "bad_bytes=%zu", bad_bytes(buf, 7));
	/* Refused input: unaligned, empty, too long, not mapped. */
	{
		struct myrimx_mm_migrate bad1 = { .va = (uintptr_t)buf + 1, .len = PAGE };
		struct myrimx_mm_migrate bad2 = { .va = (uintptr_t)buf, .len = 0 };
		struct myrimx_mm_exclusive bad3 = { .va = (uintptr_t)buf, .npages = MYRIMX_MM_MAX_PAGES + 1 };
		struct myrimx_mm_exclusive bad4 = { .va = (uintptr_t)buf, .npages = 1, .flags = 0x80 };
		struct myrimx_mm_migrate bad5 = { .va = (uintptr_t)buf, .len = 2 * BUF_LEN };
		int e1 = ioctl(hfd, MYRIMX_MM_MIGRATE, &bad1) ? errno : 0;
		int e2 = ioctl(hfd, MYRIMX_MM_MIGRATE, &bad2) ? errno : 0;
		int e3 = ioctl(hfd, MYRIMX_MM_EXCLUSIVE, &bad3) ? errno : 0;
		int e4 = ioctl(hfd, MYRIMX_MM_EXCLUSIVE, &bad4) ? errno : 0;
		int e5 = ioctl(hfd, MYRIMX_MM_MIGRATE, &bad5) ? errno : 0;

		check("helper:refused", e1 == EINVAL && e2 == EINVAL && e3 == EINVAL && e4 == EINVAL && e5 == EFAULT,
		      "unaligned=%d empty=%d too_many=%d bad_flags=%d beyond_vma=%d", e1, e2, e3, e4, e5);
	}
	close(hfd);
	munmap(buf, BUF_LEN);
	return 0;
}

/* stat_refresh folds every CPU's pending vmstat deltas into the global
 * counters: /proc/vmstat alone may lag by a per-CPU batch until the
 * kernel's periodic fold (seen: 2 releases short right after rmmod). */
static int stat_refresh(void)
{
	int fd = open("/proc/sys/vm/stat_refresh", O_WRONLY | O_CLOEXEC);
	int ok;

	if (fd < 0)
		return -1;
	ok = write(fd, "1", 1) == 1;
	close(fd);
	return ok ? 0 : -1;
}

static int pins(void)
{
	long long acq, rel;
	int refreshed = stat_refresh() == 0, tries = 0;

	/* Without stat_refresh, give the periodic fold a bounded while. */
	for (;;) {
		acq = vmstat("nr_foll_pin_acquired");
		rel = vmstat("nr_foll_pin_released");
		if (refreshed || acq == rel || ++tries > 50)
			break;
		usleep(100 * 1000);
	}
	check("pins", acq >= 0 && acq == rel, "nr_foll_pin_acquired=%lld nr_foll_pin_released=%lld stat_refresh=%d",
	      acq, rel, refreshed);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*run)(void);
	} cmds[] = {
		{ "move-pages", scenario_move_pages },
		{ "hmm-migrate", scenario_hmm_migrate },
		{ "exclusive", scenario_exclusive },
		{ "helper", scenario_helper },
		{ "pins", pins },
	};

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int a = 1; a < argc; a++) {
		size_t i;

		for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
			if (!strcmp(argv[a], cmds[i].name))
				break;
		if (i == sizeof(cmds) / sizeof(cmds[0])) {
			fprintf(stderr, "usage: mxmm {move-pages|hmm-migrate|exclusive|helper|pins}...\n");
			return 2;
		}
		if (cmds[i].run())
			failures++;
	}
	if (argc < 2) {
		fprintf(stderr, "usage: mxmm {move-pages|hmm-migrate|exclusive|helper|pins}...\n");
		return 2;
	}
	return failures ? 1 : 0;
}
