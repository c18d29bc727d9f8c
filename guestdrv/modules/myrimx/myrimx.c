// SPDX-License-Identifier: GPL-2.0
/*
 * myrimx - guest driver for myriemu's zero-copy "myrimx" PCI personality.
 *
 * One char device per PCI function (/dev/myrimx<N>), one device endpoint
 * per open file. User buffers are pinned with pin_user_pages_fast and
 * registered with the card; in the default mode every registration has its
 * own mmu_interval_notifier whose callback revokes it (DEREG + FENCE, wait
 * for the fence, unpin) before the CPU page tables change, so the device
 * never writes a page the process no longer maps. The design is
 * shared/reference/zero-copy-design.md section 6.8; docs/myrimx-driver.md
 * describes this module; myrimx_abi.h is the device ABI and
 * myrimx_ioctl.h the user ABI (both copies of guestdrv/include/, checked
 * equal by headers_test.go).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cdev.h>
#include <linux/delay.h>
#include <linux/device.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/kref.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/random.h>
#include <linux/scatterlist.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/unaligned.h>
#include <linux/vmalloc.h>
#include <linux/wait.h>

#include "myrimx_abi.h"
#include "myrimx_ioctl.h"

static char *mode = "notifier";
module_param(mode, charp, 0444);
MODULE_PARM_DESC(mode, "notifier (default: pin + mmu_interval_notifier) or pinonly (FOLL_LONGTERM, no notifier)");

static bool allow_bugs;
module_param(allow_bugs, bool, 0444);
MODULE_PARM_DESC(allow_bugs, "let the DEBUG_BUG ioctl turn on deliberate driver bugs");

static unsigned int fence_timeout_ms = 10000;
module_param(fence_timeout_ms, uint, 0644);
MODULE_PARM_DESC(fence_timeout_ms, "bound of a fence (and of any wait for the device); past it bus mastering is cleared and the device is dead");

static unsigned int reg_retry_ms = 1000;
module_param(reg_retry_ms, uint, 0644);
MODULE_PARM_DESC(reg_retry_ms, "time bound of a REG's read_begin/read_retry loop");

#define CMD_ORDER	8	/* 256 commands */
#define EQ_ORDER	10	/* 1024 events */
#define UQ_SIZE		4096	/* user completions queued per endpoint */
#define SYNC_SLOTS	64	/* REG_DONE/DEREG_DONE statuses kept, by cmd_seq */

static int drv_mode;		/* MYRIMX_MODE_* */
static struct class *mx_class;
static dev_t mx_devt_base;
static DEFINE_IDR(mx_idr);
static DEFINE_MUTEX(mx_idr_lock);

/* Counters: one lock for every endpoint's and the module's (cheap enough,
 * and usable from the notifier and the interrupt handler). */
static DEFINE_SPINLOCK(stats_lock);
static struct myrimx_stats gstats;

struct mx_dev;
struct mx_ep;

struct mx_region {
	struct mx_ep *ep;
	struct mmu_interval_notifier notif;
	bool has_notif;
	bool releasing;			/* a DEREG owns it, under ep->reg_lock */
	u32 id, gen, access;
	int state;			/* MYRIMX_REGION_*, under ep->reg_lock */
	unsigned long va, len, start;
	unsigned long npages;
	struct page **pages;
	unsigned long npinned;
	struct sg_table sgt;
	bool sgt_alloc, mapped;
	u64 *gpas;			/* registered GPA of each page */
	void *plist;			/* page list for the device, little-endian */
	dma_addr_t plist_dma;
};

struct mx_slot {
	/* last generation handed out: kept across opens of the endpoint,
	 * because the device refuses (BUSY) a generation among the id's
	 * recently retired ones */
	u32 gen;
	u32 last_reason;
	u64 invalidations;
};

struct mx_ep {
	struct mx_dev *mx;
	int index;
	void __iomem *regs;
	bool busy;			/* opened, under mx->open_lock */

	struct mm_struct *mm;		/* mmgrab'd owner */
	pid_t tgid;

	/* command ring */
	spinlock_t cmd_lock;
	void *cmdq;
	dma_addr_t cmdq_dma;
	u32 tail, seq;

	/* event queue, status block, completions: eq_lock (irq-safe) */
	spinlock_t eq_lock;
	bool live;
	void *eq;
	dma_addr_t eq_dma;
	void *sb;
	dma_addr_t sb_dma;
	u32 eq_head;
	u64 fence_done;
	u32 sync_seq[SYNC_SLOTS];
	u8 sync_status[SYNC_SLOTS];
	struct myrimx_event *uq;
	u32 uq_head, uq_tail;
	u64 dropped;
	bool error;
	u8 cause;
	wait_queue_head_t wq;

	u64 fence_seq;			/* under reg_lock */

	/* registrations */
	struct mutex reg_lock;
	struct mx_region **regions;
	struct mx_slot *slots;
	u32 next_id;
	u32 *gen_map;			/* vmalloc_user, mmapped read-only */
	u32 bugs;

	struct myrimx_stats stats;	/* under stats_lock */
};

struct mx_dev {
	struct kref kref;
	struct pci_dev *pdev;
	void __iomem *bar;
	int instance;
	struct cdev *cdev;
	struct device *node;
	u64 nic_id, caps;
	u32 abi, max_pages;
	int nep;
	int nvec;			/* MSI-X vectors, 0: polling */
	bool gone;			/* PCI remove ran */
	bool dead;			/* a fence timed out; bus master off */
	struct mutex open_lock;
	struct mx_ep eps[MYRIMX_MAX_ENDPOINTS];
};

#define STAT_ADD(ep, field, n) do {					\
	unsigned long _f;						\
	spin_lock_irqsave(&stats_lock, _f);				\
	(ep)->stats.field += (n);					\
	gstats.field += (n);						\
	spin_unlock_irqrestore(&stats_lock, _f);			\
} while (0)

static bool mx_broken(struct mx_dev *mx)
{
	return READ_ONCE(mx->gone) || READ_ONCE(mx->dead);
}

static void mx_free(struct kref *kref)
{
	struct mx_dev *mx = container_of(kref, struct mx_dev, kref);
	int i;

	for (i = 0; i < MYRIMX_MAX_ENDPOINTS; i++)
		kvfree(mx->eps[i].slots);
	pci_iounmap(mx->pdev, mx->bar);
	pci_release_regions(mx->pdev);
	pci_disable_device(mx->pdev);
	pci_dev_put(mx->pdev);
	kfree(mx);
}

/* mx_kill is the fence-timeout path of zero-copy-design.md 6.7: the device
 * did not answer, so stop it from mastering the bus before any page is
 * unpinned. */
static void mx_kill(struct mx_dev *mx, const char *why)
{
	int i;

	if (READ_ONCE(mx->dead))
		return;
	pci_clear_master(mx->pdev);
	WRITE_ONCE(mx->dead, true);
	dev_err(&mx->pdev->dev, "%s: bus mastering cleared, device dead\n", why);
	for (i = 0; i < mx->nep; i++)
		wake_up_all(&mx->eps[i].wq);
}

/* ---- commands ---------------------------------------------------------- */

typedef u8 mx_cmd[MYRIMX_CMD_SIZE];

static void cmd_region(mx_cmd c, u8 op, u64 cookie, u32 id, u32 gen)
{
	memset(c, 0, MYRIMX_CMD_SIZE);
	c[MYRIMX_CMD_OPCODE] = op;
	put_unaligned_le64(cookie, c + MYRIMX_CMD_COOKIE);
	put_unaligned_le32(id, c + MYRIMX_CMD_REGION_ID);
	put_unaligned_le32(gen, c + MYRIMX_CMD_GENERATION);
}

static u32 sb_cmdq_head(struct mx_ep *ep)
{
	return le32_to_cpu(READ_ONCE(*(__le32 *)(ep->sb + MYRIMX_SB_CMDQ_HEAD)));
}

static u64 sb_fence_done(struct mx_ep *ep)
{
	return le64_to_cpu(READ_ONCE(*(__le64 *)(ep->sb + MYRIMX_SB_FENCE_DONE)));
}

/*
 * ep_post writes n commands into the ring and rings the doorbell once; it
 * returns the cmd_seq of the first. It sleeps (bounded) while the ring is
 * full; never allocates, so the notifier may use it.
 */
static int ep_post(struct mx_ep *ep, mx_cmd *cmds, int n, u32 *first)
{
	const u32 size = 1u << CMD_ORDER;
	unsigned long deadline = jiffies + msecs_to_jiffies(fence_timeout_ms);
	int i;

	for (;;) {
		spin_lock(&ep->cmd_lock);
		if (ep->tail - sb_cmdq_head(ep) + n <= size ||
		    ep->tail - readl(ep->regs + MYRIMX_EP_CMDQ_HEAD) + n <= size)
			break;
		spin_unlock(&ep->cmd_lock);
		if (mx_broken(ep->mx))
			return -EIO;
		if (time_after(jiffies, deadline))
			return -ETIMEDOUT;
		usleep_range(200, 1000);
	}
	*first = ep->seq + 1;
	for (i = 0; i < n; i++) {
		ep->seq++;
		put_unaligned_le32(ep->seq, cmds[i] + MYRIMX_CMD_SEQ);
		memcpy(ep->cmdq + (ep->tail & (size - 1)) * MYRIMX_CMD_SIZE, cmds[i], MYRIMX_CMD_SIZE);
		ep->tail++;
	}
	/* writel orders the ring stores before the doorbell */
	writel(ep->tail, ep->regs + MYRIMX_EP_CMDQ_TAIL);
	spin_unlock(&ep->cmd_lock);
	return 0;
}

/* ---- events ------------------------------------------------------------ */

static void uq_push(struct mx_ep *ep, u32 type, const u8 *ev)
{
	struct myrimx_event *u;

	if (ep->uq_tail - ep->uq_head >= UQ_SIZE) {
		ep->dropped++;
		STAT_ADD(ep, completions_dropped, 1);
		return;
	}
	u = &ep->uq[ep->uq_tail % UQ_SIZE];
	memset(u, 0, sizeof(*u));
	u->type = type;
	u->status = ev[MYRIMX_EV_STATUS];
	u->cookie = get_unaligned_le64(ev + MYRIMX_EV_COOKIE);
	u->match = get_unaligned_le64(ev + MYRIMX_EV_MATCH);
	u->src_nic = get_unaligned_le64(ev + MYRIMX_EV_SRC_NIC);
	u->src_ep = get_unaligned_le16(ev + MYRIMX_EV_SRC_EP);
	u->msg_len = get_unaligned_le32(ev + MYRIMX_EV_MSG_LENGTH);
	u->xfer_len = get_unaligned_le32(ev + MYRIMX_EV_XFER_LENGTH);
	u->cmd_seq = get_unaligned_le32(ev + MYRIMX_EV_SEQ);
	u->region_id = get_unaligned_le32(ev + MYRIMX_EV_REGION_ID);
	u->generation = get_unaligned_le32(ev + MYRIMX_EV_GENERATION);
	u->reason = ev[MYRIMX_EV_REASON];
	ep->uq_tail++;
	STAT_ADD(ep, completions, 1);
}

/* ep_dispatch handles one event; eq_lock held. */
static void ep_dispatch(struct mx_ep *ep, const u8 *ev)
{
	u8 type = ev[MYRIMX_EV_TYPE], status = ev[MYRIMX_EV_STATUS];
	u32 seq = get_unaligned_le32(ev + MYRIMX_EV_SEQ);
	u32 id, gen;

	switch (type) {
	case MYRIMX_EVT_REG_DONE:
	case MYRIMX_EVT_DEREG_DONE:
		ep->sync_status[seq % SYNC_SLOTS] = status;
		ep->sync_seq[seq % SYNC_SLOTS] = seq;
		if (type == MYRIMX_EVT_DEREG_DONE && status != MYRIMX_STATUS_SUCCESS)
			dev_warn_ratelimited(&ep->mx->pdev->dev, "ep %d: DEREG(%u, %u) completed with status %u\n",
					     ep->index, get_unaligned_le32(ev + MYRIMX_EV_REGION_ID),
					     get_unaligned_le32(ev + MYRIMX_EV_GENERATION), status);
		break;
	case MYRIMX_EVT_FENCE_DONE:
		ep->fence_done = max(ep->fence_done, get_unaligned_le64(ev + MYRIMX_EV_MATCH));
		break;
	case MYRIMX_EVT_SEND_DONE:
		uq_push(ep, MYRIMX_EVENT_SEND_DONE, ev);
		break;
	case MYRIMX_EVT_RECV_DONE:
		uq_push(ep, MYRIMX_EVENT_RECV_DONE, ev);
		break;
	case MYRIMX_EVT_CANCEL_DONE:
		uq_push(ep, MYRIMX_EVENT_CANCEL_DONE, ev);
		break;
	case MYRIMX_EVT_REGION_REVOKED:
		/* The device revoked (id, gen) on its own (QEMU DMA_UNMAP): a
		 * user cache must not trust it any more. The pins stay until
		 * DEREG or close (harmless: the device no longer uses them). */
		id = get_unaligned_le32(ev + MYRIMX_EV_REGION_ID);
		gen = get_unaligned_le32(ev + MYRIMX_EV_GENERATION);
		if (id < MYRIMX_REGIONS_PER_EP && READ_ONCE(ep->gen_map[id]) == gen)
			WRITE_ONCE(ep->gen_map[id], MYRIMX_GEN_NONE);
		STAT_ADD(ep, regions_revoked, 1);
		uq_push(ep, MYRIMX_EVENT_REGION_REVOKED, ev);
		break;
	case MYRIMX_EVT_EP_ERROR:
		ep->error = true;
		ep->cause = ev[MYRIMX_EV_REASON];
		dev_warn_ratelimited(&ep->mx->pdev->dev, "ep %d: EP_ERROR status %u cause %u\n",
				     ep->index, status, ep->cause);
		uq_push(ep, MYRIMX_EVENT_ENDPOINT_ERROR, ev);
		break;
	case MYRIMX_EVT_NOP_DONE:
		break;
	default:
		dev_warn_ratelimited(&ep->mx->pdev->dev, "ep %d: unknown event type %u\n", ep->index, type);
	}
}

/* ep_poll consumes the events the device wrote; eq_lock held. */
static int ep_poll_locked(struct mx_ep *ep, bool rearm)
{
	const u32 size = 1u << EQ_ORDER;
	int n = 0;

	if (!ep->live)
		return 0;
	for (;;) {
		u8 *ev = ep->eq + (ep->eq_head & (size - 1)) * MYRIMX_EVENT_SIZE;
		u32 w0 = le32_to_cpu(READ_ONCE(*(__le32 *)ev));
		u8 want = ((ep->eq_head >> EQ_ORDER) & 1) ? 0 : 1;

		if (((w0 >> 16) & 0xff) != want)
			break;
		dma_rmb();	/* the body was written before the first word */
		ep_dispatch(ep, ev);
		ep->eq_head++;
		n++;
	}
	if (n || rearm)
		writel(ep->eq_head, ep->regs + MYRIMX_EP_EQ_HEAD);
	return n;
}

static void ep_poll(struct mx_ep *ep)
{
	unsigned long f;
	int n;

	spin_lock_irqsave(&ep->eq_lock, f);
	n = ep_poll_locked(ep, false);
	spin_unlock_irqrestore(&ep->eq_lock, f);
	if (n)
		wake_up_all(&ep->wq);
}

static irqreturn_t mx_ep_irq(int irq, void *data)
{
	struct mx_ep *ep = data;
	unsigned long f;

	spin_lock_irqsave(&ep->eq_lock, f);
	ep_poll_locked(ep, true);
	spin_unlock_irqrestore(&ep->eq_lock, f);
	STAT_ADD(ep, irqs, 1);
	wake_up_all(&ep->wq);
	return IRQ_HANDLED;
}

static irqreturn_t mx_dev_irq(int irq, void *data)
{
	struct mx_dev *mx = data;
	int i;

	dev_warn_ratelimited(&mx->pdev->dev, "device interrupt: DEV_STATUS %#x ERR_INFO %#x\n",
			     readl(mx->bar + MYRIMX_REG_DEV_STATUS), readl(mx->bar + MYRIMX_REG_ERR_INFO));
	for (i = 0; i < mx->nep; i++)
		wake_up_all(&mx->eps[i].wq);
	return IRQ_HANDLED;
}

static bool ep_sync_done(struct mx_ep *ep, u32 seq, u8 *status)
{
	unsigned long f;
	bool done;

	spin_lock_irqsave(&ep->eq_lock, f);
	done = ep->sync_seq[seq % SYNC_SLOTS] == seq;
	if (done)
		*status = ep->sync_status[seq % SYNC_SLOTS];
	spin_unlock_irqrestore(&ep->eq_lock, f);
	return done;
}

static bool ep_fenced(struct mx_ep *ep, u64 seq)
{
	return READ_ONCE(ep->fence_done) >= seq || sb_fence_done(ep) >= seq;
}

/* The wait slice: the interrupt wakes us; the slice only bounds how long a
 * lost interrupt (or none, without MSI-X) costs. */
static unsigned long ep_slice(struct mx_ep *ep)
{
	return ep->mx->nvec ? msecs_to_jiffies(20) : 1;
}

/* ep_wait_sync waits (uninterruptibly, bounded) for REG_DONE/DEREG_DONE of
 * seq. */
static int ep_wait_sync(struct mx_ep *ep, u32 seq, u8 *status)
{
	unsigned long deadline = jiffies + msecs_to_jiffies(fence_timeout_ms);

	for (;;) {
		ep_poll(ep);
		if (ep_sync_done(ep, seq, status))
			return 0;
		if (mx_broken(ep->mx))
			return -EIO;
		if (time_after(jiffies, deadline))
			return -ETIMEDOUT;
		wait_event_timeout(ep->wq, ep_sync_done(ep, seq, status) || mx_broken(ep->mx),
				   ep_slice(ep));
	}
}

static void fence_record(struct mx_ep *ep, u64 ns)
{
	u64 us = ns / 1000;
	int b = us ? min(fls64(us) - 1, MYRIMX_FENCE_HIST - 1) : 0;
	unsigned long f;

	spin_lock_irqsave(&stats_lock, f);
	for (int i = 0; i < 2; i++) {
		struct myrimx_stats *s = i ? &gstats : &ep->stats;

		if (!s->fences || ns < s->fence_ns_min)
			s->fence_ns_min = ns;
		if (ns > s->fence_ns_max)
			s->fence_ns_max = ns;
		s->fences++;
		s->fence_ns_sum += ns;
		s->fence_hist[b]++;
	}
	spin_unlock_irqrestore(&stats_lock, f);
}

/*
 * ep_wait_fence waits until FENCE(seq) completed: the event (or the status
 * block, written before the register) wakes us, the FENCE_DONE register is
 * re-read as the authority when a slice passes without news.
 */
static int ep_wait_fence(struct mx_ep *ep, u64 seq)
{
	unsigned long deadline = jiffies + msecs_to_jiffies(fence_timeout_ms);

	for (;;) {
		ep_poll(ep);
		if (ep_fenced(ep, seq))
			return 0;
		if (READ_ONCE(ep->mx->gone))
			return -EIO;
		if (readq(ep->regs + MYRIMX_EP_FENCE_DONE) >= seq)
			return 0;
		if (time_after(jiffies, deadline))
			return -ETIMEDOUT;
		wait_event_timeout(ep->wq, ep_fenced(ep, seq) || READ_ONCE(ep->mx->gone), ep_slice(ep));
	}
}

/* ---- registrations ----------------------------------------------------- */

static enum dma_data_direction region_dir(struct mx_region *r)
{
	if (r->access & MYRIMX_ACCESS_RECV)
		return r->access & MYRIMX_ACCESS_SEND ? DMA_BIDIRECTIONAL : DMA_FROM_DEVICE;
	return DMA_TO_DEVICE;
}

/*
 * region_unpin drops the DMA mapping and the pins. In the notifier (and
 * under reg_lock, which the notifier takes) no page lock may be taken: a
 * reclaim or migration that holds a folio lock may be what called us. So
 * there the pages are dirtied without the lock (our pin keeps the folio's
 * mapping stable, which folio_mark_dirty allows, as umem_odp does); outside
 * every lock unpin_user_pages_dirty_lock is used.
 */
static void region_unpin(struct mx_region *r, bool nolock)
{
	struct mx_ep *ep = r->ep;
	bool dirty = (r->access & MYRIMX_ACCESS_RECV) && !(ep->bugs & MYRIMX_BUG_NO_DIRTY);
	unsigned long i, n = r->npinned;

	if (r->mapped) {
		dma_unmap_sgtable(&ep->mx->pdev->dev, &r->sgt, region_dir(r), 0);
		r->mapped = false;
	}
	if (!n)
		return;
	if (nolock) {
		if (dirty)
			for (i = 0; i < n; i++)
				folio_mark_dirty(page_folio(r->pages[i]));
		unpin_user_pages(r->pages, n);
	} else {
		unpin_user_pages_dirty_lock(r->pages, n, dirty);
	}
	r->npinned = 0;
	STAT_ADD(ep, pins_released, n);
	STAT_ADD(ep, pins_held, -(u64)n);
}

/*
 * region_revoke makes the device stop using r: DEREG + FENCE in one
 * doorbell, then the wait for the fence; on a timeout the bus master is
 * cleared first. With unpin the pages are released here without page locks
 * (the notifier's way); otherwise the caller unpins after dropping
 * reg_lock. reg_lock held; r VALID.
 */
static void region_revoke(struct mx_region *r, u8 reason, bool unpin)
{
	struct mx_ep *ep = r->ep;
	struct mx_dev *mx = ep->mx;
	u32 bugs = ep->bugs;
	mx_cmd cmds[2];
	u32 first;
	u64 t0, fseq;
	int err = 0;

	lockdep_assert_held(&ep->reg_lock);
	r->state = MYRIMX_REGION_INVALIDATING;
	WRITE_ONCE(ep->gen_map[r->id], MYRIMX_GEN_NONE);
	ep->slots[r->id].last_reason = reason;
	ep->slots[r->id].invalidations++;
	if (reason < MYRIMX_NR_REASONS)
		STAT_ADD(ep, invalidations[reason], 1);

	if (bugs & MYRIMX_BUG_UNPIN_BEFORE_FENCE) {
		region_unpin(r, true);
		STAT_ADD(ep, bugs_applied, 1);
	}
	if (!mx_broken(mx)) {
		cmd_region(cmds[0], MYRIMX_OP_DEREG, (u64)r->id << 32 | r->gen, r->id, r->gen);
		cmds[0][MYRIMX_CMD_REASON] = reason;
		fseq = ++ep->fence_seq;
		memset(cmds[1], 0, MYRIMX_CMD_SIZE);
		cmds[1][MYRIMX_CMD_OPCODE] = MYRIMX_OP_FENCE;
		cmds[1][MYRIMX_CMD_FLAGS] = MYRIMX_FLAG_EVENT;
		put_unaligned_le64(fseq, cmds[1] + MYRIMX_CMD_COOKIE);
		put_unaligned_le64(fseq, cmds[1] + MYRIMX_CMD_FENCE_SEQ);
		t0 = ktime_get_ns();
		err = ep_post(ep, cmds, 2, &first);
		if (!err) {
			STAT_ADD(ep, dereg, 1);
			if (bugs & MYRIMX_BUG_NO_FENCE_WAIT) {
				STAT_ADD(ep, bugs_applied, 1);
			} else {
				err = ep_wait_fence(ep, fseq);
				if (!err)
					fence_record(ep, ktime_get_ns() - t0);
			}
		}
		if (err && !READ_ONCE(mx->gone)) {
			STAT_ADD(ep, fence_timeouts, 1);
			mx_kill(mx, err == -ETIMEDOUT ? "fence timed out" : "DEREG could not be posted");
		}
	}
	if (unpin)
		region_unpin(r, true);
	r->state = MYRIMX_REGION_INVALID;
}

static bool mx_invalidate(struct mmu_interval_notifier *mni,
			  const struct mmu_notifier_range *range, unsigned long cur_seq)
{
	struct mx_region *r = container_of(mni, struct mx_region, notif);
	struct mx_ep *ep = r->ep;
	u8 reason = range->event < 8 ? range->event : MYRIMX_REASON_UNMAP;

	if (mmu_notifier_range_blockable(range)) {
		mutex_lock(&ep->reg_lock);
	} else if (!mutex_trylock(&ep->reg_lock)) {
		STAT_ADD(ep, nonblock_refused, 1);
		return false;
	} else if (r->state == MYRIMX_REGION_VALID && !(ep->bugs & MYRIMX_BUG_SKIP_INVALIDATE)) {
		/* revoking sleeps (fence): refuse, as the API allows */
		mutex_unlock(&ep->reg_lock);
		STAT_ADD(ep, nonblock_refused, 1);
		return false;
	}
	mmu_interval_set_seq(mni, cur_seq);
	STAT_ADD(ep, callbacks[reason], 1);
	if (r->state != MYRIMX_REGION_VALID) {
		STAT_ADD(ep, spurious, 1);
	} else if (ep->bugs & MYRIMX_BUG_SKIP_INVALIDATE) {
		ep->slots[r->id].last_reason = reason;
		ep->slots[r->id].invalidations++;
		STAT_ADD(ep, invalidations[reason], 1);
		STAT_ADD(ep, bugs_applied, 1);
	} else {
		region_revoke(r, reason, true);
	}
	mutex_unlock(&ep->reg_lock);
	return true;
}

static const struct mmu_interval_notifier_ops mx_notifier_ops = {
	.invalidate = mx_invalidate,
};

static void region_free(struct mx_region *r)
{
	struct mx_dev *mx = r->ep->mx;

	if (r->sgt_alloc)
		sg_free_table(&r->sgt);
	if (r->plist)
		dma_free_coherent(&mx->pdev->dev, r->npages * 8, r->plist, r->plist_dma);
	kvfree(r->gpas);
	kvfree(r->pages);
	kfree(r);
}

/* region_release ends a slot's registration from process context (DEREG,
 * close): revoke under the lock, unlock, then remove the notifier (it may
 * wait for a callback in progress, which takes the lock), then unpin with
 * the page lock and free. */
static void region_release(struct mx_ep *ep, struct mx_region *r, u8 reason)
{
	mutex_lock(&ep->reg_lock);
	if (r->state == MYRIMX_REGION_VALID)
		region_revoke(r, reason, false);
	r->state = MYRIMX_REGION_FREE;
	ep->regions[r->id] = NULL;
	mutex_unlock(&ep->reg_lock);
	if (r->has_notif)
		mmu_interval_notifier_remove(&r->notif);
	region_unpin(r, false);
	region_free(r);
}

static int status_errno(u8 st)
{
	switch (st) {
	case MYRIMX_STATUS_SUCCESS:
		return 0;
	case MYRIMX_STATUS_BUSY:
		return -EBUSY;
	case MYRIMX_STATUS_BAD_ADDRESS:
		return -EFAULT;
	case MYRIMX_STATUS_NO_RESOURCES:
		return -ENOMEM;
	case MYRIMX_STATUS_BAD_COMMAND:
		return -EINVAL;
	default:
		return -EIO;
	}
}

/* region_pin pins and maps r's pages and fills its page lists. */
static int region_pin(struct mx_region *r, unsigned int gup)
{
	struct device *dev = &r->ep->mx->pdev->dev;
	struct sg_dma_page_iter it;
	unsigned long done = 0, i = 0;
	int err;

	while (done < r->npages) {
		int n = pin_user_pages_fast(r->start + done * PAGE_SIZE,
					    min_t(unsigned long, r->npages - done, 1UL << 16),
					    gup, r->pages + done);
		if (n <= 0) {
			err = n ? n : -EFAULT;
			goto unpin;
		}
		done += n;
		r->npinned = done;
		STAT_ADD(r->ep, pins_acquired, n);
		STAT_ADD(r->ep, pins_held, n);
		cond_resched();
	}
	err = sg_alloc_table_from_pages(&r->sgt, r->pages, r->npages, 0, r->npages << PAGE_SHIFT, GFP_KERNEL);
	if (err)
		goto unpin;
	r->sgt_alloc = true;
	err = dma_map_sgtable(dev, &r->sgt, region_dir(r), 0);
	if (err)
		goto free_sgt;
	r->mapped = true;
	for_each_sgtable_dma_page(&r->sgt, &it, 0) {
		dma_addr_t a = sg_page_iter_dma_address(&it);

		if (i >= r->npages)
			break;
		r->gpas[i] = a;
		((__le64 *)r->plist)[i] = cpu_to_le64(a);
		i++;
	}
	return 0;
free_sgt:
	sg_free_table(&r->sgt);
	r->sgt_alloc = false;
unpin:
	region_unpin(r, false);
	return err;
}

static void region_unpin_all(struct mx_region *r)
{
	region_unpin(r, false);
	if (r->sgt_alloc) {
		sg_free_table(&r->sgt);
		r->sgt_alloc = false;
	}
}

static long mx_reg(struct mx_ep *ep, struct myrimx_reg __user *up)
{
	struct mx_dev *mx = ep->mx;
	struct myrimx_reg a;
	struct mx_region *r;
	unsigned long deadline, end;
	unsigned long seq = 0;
	unsigned int gup = 0;
	u32 id, retries = 0;
	mx_cmd c;
	u32 cseq;
	u8 st;
	int err, i;

	if (copy_from_user(&a, up, sizeof(a)))
		return -EFAULT;
	if (!a.len || !a.access || (a.access & ~(MYRIMX_ACCESS_SEND | MYRIMX_ACCESS_RECV)) ||
	    (a.flags & ~MYRIMX_REG_LONGTERM) || a.va + a.len < a.va || a.va + a.len > TASK_SIZE)
		return -EINVAL;
	r = kzalloc(sizeof(*r), GFP_KERNEL);
	if (!r)
		return -ENOMEM;
	r->ep = ep;
	r->va = a.va;
	r->len = a.len;
	r->access = a.access;
	r->start = a.va & PAGE_MASK;
	end = PAGE_ALIGN(a.va + a.len);
	r->npages = (end - r->start) >> PAGE_SHIFT;
	if (r->npages > mx->max_pages) {
		kfree(r);
		return -E2BIG;
	}
	r->pages = kvmalloc_array(r->npages, sizeof(*r->pages), GFP_KERNEL);
	r->gpas = kvmalloc_array(r->npages, sizeof(u64), GFP_KERNEL);
	r->plist = dma_alloc_coherent(&mx->pdev->dev, r->npages * 8, &r->plist_dma, GFP_KERNEL);
	if (!r->pages || !r->gpas || !r->plist) {
		region_free(r);
		return -ENOMEM;
	}

	/* reserve a slot */
	mutex_lock(&ep->reg_lock);
	for (i = 0; i < MYRIMX_REGIONS_PER_EP; i++) {
		id = (ep->next_id + i) % MYRIMX_REGIONS_PER_EP;
		if (!ep->regions[id])
			break;
	}
	if (i == MYRIMX_REGIONS_PER_EP) {
		mutex_unlock(&ep->reg_lock);
		region_free(r);
		return -ENOSPC;
	}
	ep->next_id = id + 1;
	r->id = id;
	r->gen = ep->slots[id].gen + 1;
	if (r->gen == MYRIMX_GEN_NONE)
		r->gen = 1;
	ep->slots[id].gen = r->gen;
	r->state = MYRIMX_REGION_PINNING;
	ep->regions[id] = r;
	mutex_unlock(&ep->reg_lock);

	if (a.access & MYRIMX_ACCESS_RECV)
		gup |= FOLL_WRITE;
	if (drv_mode == MYRIMX_MODE_PINONLY || (a.flags & MYRIMX_REG_LONGTERM))
		gup |= FOLL_LONGTERM;
	if (drv_mode == MYRIMX_MODE_NOTIFIER) {
		err = mmu_interval_notifier_insert(&r->notif, current->mm, r->start,
						   r->npages << PAGE_SHIFT, &mx_notifier_ops);
		if (err)
			goto fail_slot;
		r->has_notif = true;
	}

	deadline = jiffies + msecs_to_jiffies(reg_retry_ms);
	for (;;) {
		if (r->has_notif)
			seq = mmu_interval_read_begin(&r->notif);
		err = region_pin(r, gup);
		if (err)
			goto fail_slot;
		mutex_lock(&ep->reg_lock);
		if (!r->has_notif || !mmu_interval_read_retry(&r->notif, seq))
			break;
		if (ep->bugs & MYRIMX_BUG_NO_SEQ_RETRY) {
			/* publish pages an invalidation already replaced */
			STAT_ADD(ep, bugs_applied, 1);
			break;
		}
		mutex_unlock(&ep->reg_lock);
		region_unpin_all(r);
		retries++;
		STAT_ADD(ep, seq_retries, 1);
		if (time_after(jiffies, deadline)) {
			err = -EAGAIN;
			goto fail_slot;
		}
		if (fatal_signal_pending(current)) {
			err = -EINTR;
			goto fail_slot;
		}
		cond_resched();
	}

	/* reg_lock held: publish to the device */
	if (mx_broken(mx)) {
		err = -EIO;
		goto fail_locked;
	}
	cmd_region(c, MYRIMX_OP_REG, (u64)r->id << 32 | r->gen, r->id, r->gen);
	put_unaligned_le32(r->access, c + MYRIMX_CMD_REG_ACCESS);
	c[MYRIMX_CMD_REG_PAGE_SHIFT] = PAGE_SHIFT;
	put_unaligned_le32(r->va & ~PAGE_MASK, c + MYRIMX_CMD_REG_FIRST_OFF);
	put_unaligned_le32(r->npages, c + MYRIMX_CMD_REG_NR_PAGES);
	put_unaligned_le64(r->len, c + MYRIMX_CMD_REG_LENGTH);
	put_unaligned_le64(r->va, c + MYRIMX_CMD_REG_USER_VA);
	put_unaligned_le64(r->plist_dma, c + MYRIMX_CMD_REG_PAGE_LIST);
	for (i = 0; ; i++) {
		err = ep_post(ep, &c, 1, &cseq);
		if (!err)
			err = ep_wait_sync(ep, cseq, &st);
		if (err == -ETIMEDOUT)
			mx_kill(mx, "REG timed out");
		if (err || st != MYRIMX_STATUS_BUSY || i == 2)
			break;
		/* a generation the device retired before we knew (another
		 * load of this driver): skip past its window of 8 */
		r->gen += 9;
		if (r->gen < 9)
			r->gen = 1;
		ep->slots[r->id].gen = r->gen;
		put_unaligned_le32(r->gen, c + MYRIMX_CMD_GENERATION);
		put_unaligned_le64((u64)r->id << 32 | r->gen, c + MYRIMX_CMD_COOKIE);
	}
	if (!err)
		err = status_errno(st);
	if (err)
		goto fail_locked;
	r->state = MYRIMX_REGION_VALID;
	WRITE_ONCE(ep->gen_map[r->id], r->gen);
	mutex_unlock(&ep->reg_lock);
	STAT_ADD(ep, reg_ok, 1);

	a.id = r->id;
	a.generation = r->gen;
	a.nr_pages = r->npages;
	a.seq_retries = retries;
	if (copy_to_user(up, &a, sizeof(a))) {
		region_release(ep, r, MYRIMX_REASON_USER);
		return -EFAULT;
	}
	return 0;

fail_locked:
	r->state = MYRIMX_REGION_INVALID;
	mutex_unlock(&ep->reg_lock);
fail_slot:
	STAT_ADD(ep, reg_failed, 1);
	mutex_lock(&ep->reg_lock);
	r->state = MYRIMX_REGION_FREE;
	ep->regions[r->id] = NULL;
	mutex_unlock(&ep->reg_lock);
	if (r->has_notif)
		mmu_interval_notifier_remove(&r->notif);
	region_unpin_all(r);
	region_free(r);
	return err;
}

static long mx_dereg(struct mx_ep *ep, struct myrimx_dereg __user *up)
{
	struct myrimx_dereg a;
	struct mx_region *r;

	if (copy_from_user(&a, up, sizeof(a)))
		return -EFAULT;
	if (a.id >= MYRIMX_REGIONS_PER_EP)
		return -EINVAL;
	mutex_lock(&ep->reg_lock);
	r = ep->regions[a.id];
	if (!r) {
		mutex_unlock(&ep->reg_lock);
		return -EINVAL;
	}
	if (r->gen != a.generation) {
		mutex_unlock(&ep->reg_lock);
		return -ESTALE;
	}
	if (r->state == MYRIMX_REGION_PINNING || r->releasing) {
		mutex_unlock(&ep->reg_lock);
		return -EBUSY;
	}
	/* claim it against a concurrent DEREG of the same handle (close
	 * cannot run during an ioctl of the same file) */
	r->releasing = true;
	mutex_unlock(&ep->reg_lock);
	region_release(ep, r, MYRIMX_REASON_USER);
	return 0;
}

static long mx_xfer(struct mx_ep *ep, void __user *up, bool send)
{
	struct myrimx_send s;
	struct myrimx_recv v;
	struct mx_region *r;
	u32 id, gen, flags, need, cseq;
	mx_cmd c;
	int err;

	if (send) {
		if (copy_from_user(&s, up, sizeof(s)))
			return -EFAULT;
		id = s.id, gen = s.generation, flags = s.flags;
		need = MYRIMX_ACCESS_SEND;
	} else {
		if (copy_from_user(&v, up, sizeof(v)))
			return -EFAULT;
		id = v.id, gen = v.generation, flags = v.flags;
		need = MYRIMX_ACCESS_RECV;
	}
	if (flags & ~MYRIMX_XFER_UNCHECKED)
		return -EINVAL;
	mutex_lock(&ep->reg_lock);
	if (!(flags & MYRIMX_XFER_UNCHECKED)) {
		r = id < MYRIMX_REGIONS_PER_EP ? ep->regions[id] : NULL;
		if (!r || r->gen != gen || r->state != MYRIMX_REGION_VALID) {
			err = -ESTALE;
			goto out;
		}
		if (!(r->access & need)) {
			err = -EACCES;
			goto out;
		}
	}
	if (mx_broken(ep->mx)) {
		err = -EIO;
		goto out;
	}
	if (send) {
		cmd_region(c, MYRIMX_OP_SEND, s.cookie, id, gen);
		put_unaligned_le64(s.offset, c + MYRIMX_CMD_OFFSET);
		put_unaligned_le32(s.len, c + MYRIMX_CMD_LENGTH);
		put_unaligned_le16(s.dest_ep, c + MYRIMX_CMD_SEND_DEST_EP);
		put_unaligned_le64(s.dest_nic, c + MYRIMX_CMD_SEND_DEST_NIC);
		put_unaligned_le64(s.match, c + MYRIMX_CMD_SEND_MATCH);
	} else {
		cmd_region(c, MYRIMX_OP_RECV, v.cookie, id, gen);
		put_unaligned_le64(v.offset, c + MYRIMX_CMD_OFFSET);
		put_unaligned_le32(v.len, c + MYRIMX_CMD_LENGTH);
		put_unaligned_le64(v.match, c + MYRIMX_CMD_RECV_MATCH);
		put_unaligned_le64(v.mask, c + MYRIMX_CMD_RECV_MASK);
	}
	err = ep_post(ep, &c, 1, &cseq);
out:
	mutex_unlock(&ep->reg_lock);
	if (err)
		return err;
	if (send) {
		STAT_ADD(ep, sends, 1);
		s.cmd_seq = cseq;
		return copy_to_user(up, &s, sizeof(s)) ? -EFAULT : 0;
	}
	STAT_ADD(ep, recvs, 1);
	v.cmd_seq = cseq;
	return copy_to_user(up, &v, sizeof(v)) ? -EFAULT : 0;
}

static bool uq_ready(struct mx_ep *ep)
{
	return READ_ONCE(ep->uq_tail) != READ_ONCE(ep->uq_head) || mx_broken(ep->mx);
}

static long mx_wait(struct mx_ep *ep, struct myrimx_wait __user *up)
{
	struct myrimx_wait a;
	struct myrimx_event *buf;
	unsigned long deadline = 0, f;
	u32 n = 0, max;
	long left;

	if (copy_from_user(&a, up, sizeof(a)))
		return -EFAULT;
	if (!a.max)
		return -EINVAL;
	max = min_t(u32, a.max, 256);
	if (a.timeout_ms > 0)
		deadline = jiffies + msecs_to_jiffies(a.timeout_ms);
	for (;;) {
		ep_poll(ep);
		if (uq_ready(ep) || a.timeout_ms == 0)
			break;
		if (a.timeout_ms > 0 && time_after_eq(jiffies, deadline))
			break;
		left = ep_slice(ep);
		if (a.timeout_ms > 0)
			left = min_t(long, left, max_t(long, 1, (long)(deadline - jiffies)));
		if (wait_event_interruptible_timeout(ep->wq, uq_ready(ep), left) < 0)
			return -ERESTARTSYS;
	}
	buf = kmalloc_array(max, sizeof(*buf), GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	spin_lock_irqsave(&ep->eq_lock, f);
	while (n < max && ep->uq_head != ep->uq_tail) {
		buf[n++] = ep->uq[ep->uq_head % UQ_SIZE];
		ep->uq_head++;
	}
	a.dropped = ep->dropped;
	spin_unlock_irqrestore(&ep->eq_lock, f);
	if (!n && READ_ONCE(ep->mx->dead)) {
		memset(buf, 0, sizeof(*buf));
		buf[0].type = MYRIMX_EVENT_ENDPOINT_ERROR;
		buf[0].status = MYRIMX_WAIT_DEVICE_DEAD;
		n = 1;
	}
	a.count = n;
	if ((n && copy_to_user(u64_to_user_ptr(a.events), buf, n * sizeof(*buf))) ||
	    copy_to_user(up, &a, sizeof(a))) {
		kfree(buf);
		return -EFAULT;
	}
	kfree(buf);
	return 0;
}

static long mx_query(struct mx_ep *ep, struct myrimx_query_reg __user *up)
{
	struct myrimx_query_reg a;
	struct mx_region *r;
	u64 *gp = NULL;
	u32 n = 0;
	int err = 0;

	if (copy_from_user(&a, up, sizeof(a)))
		return -EFAULT;
	if (a.id >= MYRIMX_REGIONS_PER_EP)
		return -EINVAL;
	if (a.gpas && a.max_gpas) {
		gp = kvmalloc_array(a.max_gpas, sizeof(u64), GFP_KERNEL);
		if (!gp)
			return -ENOMEM;
	}
	mutex_lock(&ep->reg_lock);
	r = ep->regions[a.id];
	a.generation = ep->slots[a.id].gen;
	a.last_reason = ep->slots[a.id].last_reason;
	a.invalidations = ep->slots[a.id].invalidations;
	a.state = MYRIMX_REGION_FREE;
	a.nr_pages = a.nr_gpas = a.pins = 0;
	a.va = a.len = 0;
	a.access = 0;
	if (r) {
		a.state = r->state;
		a.generation = r->gen;
		a.nr_pages = r->npages;
		a.va = r->va;
		a.len = r->len;
		a.access = r->access;
		a.pins = r->npinned;
		if (gp && r->state != MYRIMX_REGION_PINNING) {
			n = min_t(u64, a.max_gpas, r->npages);
			memcpy(gp, r->gpas, n * sizeof(u64));
		}
	}
	mutex_unlock(&ep->reg_lock);
	a.nr_gpas = n;
	if (n && copy_to_user(u64_to_user_ptr(a.gpas), gp, n * sizeof(u64)))
		err = -EFAULT;
	else if (copy_to_user(up, &a, sizeof(a)))
		err = -EFAULT;
	kvfree(gp);
	return err;
}

static long mx_stats(struct mx_ep *ep, struct myrimx_stats __user *up)
{
	struct myrimx_stats *s;
	u32 scope;
	unsigned long f;
	int err = 0;

	if (get_user(scope, &up->scope))
		return -EFAULT;
	if (scope > MYRIMX_STATS_GLOBAL)
		return -EINVAL;
	s = kmalloc(sizeof(*s), GFP_KERNEL);
	if (!s)
		return -ENOMEM;
	spin_lock_irqsave(&stats_lock, f);
	*s = scope == MYRIMX_STATS_GLOBAL ? gstats : ep->stats;
	spin_unlock_irqrestore(&stats_lock, f);
	s->scope = scope;
	if (copy_to_user(up, s, sizeof(*s)))
		err = -EFAULT;
	kfree(s);
	return err;
}

static long mx_info(struct mx_ep *ep, struct myrimx_info __user *up)
{
	struct mx_dev *mx = ep->mx;
	struct myrimx_info a = {
		.nic_id = mx->nic_id,
		.caps = mx->caps,
		.abi_version = mx->abi,
		.ioctl_version = MYRIMX_IOCTL_VERSION,
		.endpoint = ep->index,
		.mode = drv_mode,
		.max_regions = MYRIMX_REGIONS_PER_EP,
		.max_pages = mx->max_pages,
		.audit_mode = (mx->caps >> MYRIMX_CAPS_AUDIT_SHIFT) & 0xff,
		.allow_bugs = allow_bugs,
		.bugs = ep->bugs,
		.instance = mx->instance,
		.gen_map_size = PAGE_ALIGN(MYRIMX_REGIONS_PER_EP * sizeof(u32)),
		.fence_timeout_ms = fence_timeout_ms,
		.dev_dead = READ_ONCE(mx->dead),
		/* So a test bounds its audit window without mapping BAR0 from
		 * user space (CONFIG_IO_STRICT_DEVMEM refuses that while this
		 * driver holds the BAR). */
		.info_flags = MYRIMX_INFO_AUDIT_COUNT,
		.audit_count = readl(mx->bar + MYRIMX_REG_AUDIT_COUNT),
	};

	return copy_to_user(up, &a, sizeof(a)) ? -EFAULT : 0;
}

static long mx_debug_bug(struct mx_ep *ep, struct myrimx_debug_bug __user *up)
{
	struct myrimx_debug_bug a;

	if (copy_from_user(&a, up, sizeof(a)))
		return -EFAULT;
	if (!allow_bugs)
		return -EPERM;
	if (a.bugs & ~MYRIMX_BUG_ALL)
		return -EINVAL;
	mutex_lock(&ep->reg_lock);
	ep->bugs = a.bugs;
	mutex_unlock(&ep->reg_lock);
	if (a.bugs)
		pr_warn("ep %d: deliberate bugs %#x on (allow_bugs=1)\n", ep->index, a.bugs);
	return 0;
}

/* mx_owner refuses any process but the opener (fork children, fd passing). */
static bool mx_owner(struct mx_ep *ep)
{
	if (current->mm == ep->mm && current->tgid == ep->tgid)
		return true;
	STAT_ADD(ep, wrong_process, 1);
	return false;
}

static long mx_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct mx_ep *ep = file->private_data;
	void __user *up = (void __user *)arg;

	if (!mx_owner(ep))
		return -EIO;
	if (cmd == MYRIMX_IOC_INFO)
		return mx_info(ep, up);
	if (cmd == MYRIMX_IOC_STATS)
		return mx_stats(ep, up);
	if (cmd == MYRIMX_IOC_QUERY_REG)
		return mx_query(ep, up);
	if (cmd == MYRIMX_IOC_DEREG)
		return mx_dereg(ep, up);
	if (cmd == MYRIMX_IOC_DEBUG_BUG)
		return mx_debug_bug(ep, up);
	if (cmd == MYRIMX_IOC_WAIT)
		return mx_wait(ep, up);
	if (mx_broken(ep->mx))
		return -EIO;
	switch (cmd) {
	case MYRIMX_IOC_REG:
		return mx_reg(ep, up);
	case MYRIMX_IOC_SEND:
		return mx_xfer(ep, up, true);
	case MYRIMX_IOC_RECV:
		return mx_xfer(ep, up, false);
	}
	return -ENOTTY;
}

static int mx_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct mx_ep *ep = file->private_data;

	if (!mx_owner(ep))
		return -EIO;
	if (vma->vm_pgoff != MYRIMX_GEN_MAP_OFFSET / PAGE_SIZE)
		return -EINVAL;
	if (vma->vm_flags & VM_WRITE)
		return -EPERM;
	vm_flags_clear(vma, VM_MAYWRITE);
	return remap_vmalloc_range(vma, ep->gen_map, 0);
}

/* ---- endpoints --------------------------------------------------------- */

static void ep_free_rings(struct mx_ep *ep)
{
	struct device *dev = &ep->mx->pdev->dev;

	if (ep->cmdq)
		dma_free_coherent(dev, MYRIMX_CMD_SIZE << CMD_ORDER, ep->cmdq, ep->cmdq_dma);
	if (ep->eq)
		dma_free_coherent(dev, MYRIMX_EVENT_SIZE << EQ_ORDER, ep->eq, ep->eq_dma);
	if (ep->sb)
		dma_free_coherent(dev, PAGE_SIZE, ep->sb, ep->sb_dma);
	ep->cmdq = ep->eq = ep->sb = NULL;
	kvfree(ep->uq);
	kvfree(ep->regions);
	vfree(ep->gen_map);
	ep->uq = NULL;
	ep->regions = NULL;
	ep->gen_map = NULL;
}

static int ep_open_hw(struct mx_ep *ep)
{
	struct device *dev = &ep->mx->pdev->dev;
	unsigned long f;
	u32 st;
	int i;

	ep->cmdq = dma_alloc_coherent(dev, MYRIMX_CMD_SIZE << CMD_ORDER, &ep->cmdq_dma, GFP_KERNEL);
	ep->eq = dma_alloc_coherent(dev, MYRIMX_EVENT_SIZE << EQ_ORDER, &ep->eq_dma, GFP_KERNEL);
	ep->sb = dma_alloc_coherent(dev, PAGE_SIZE, &ep->sb_dma, GFP_KERNEL);
	ep->uq = kvcalloc(UQ_SIZE, sizeof(*ep->uq), GFP_KERNEL);
	ep->regions = kvcalloc(MYRIMX_REGIONS_PER_EP, sizeof(*ep->regions), GFP_KERNEL);
	ep->gen_map = vmalloc_user(PAGE_ALIGN(MYRIMX_REGIONS_PER_EP * sizeof(u32)));
	if (!ep->cmdq || !ep->eq || !ep->sb || !ep->uq || !ep->regions || !ep->gen_map) {
		ep_free_rings(ep);
		return -ENOMEM;
	}
	for (i = 0; i < MYRIMX_REGIONS_PER_EP; i++) {
		ep->slots[i].last_reason = MYRIMX_REASON_NONE;
		ep->slots[i].invalidations = 0;
	}
	for (i = 0; i < SYNC_SLOTS; i++)
		ep->sync_seq[i] = 0;
	ep->tail = ep->seq = 0;
	ep->eq_head = 0;
	ep->fence_done = ep->fence_seq = 0;
	ep->uq_head = ep->uq_tail = 0;
	ep->dropped = 0;
	ep->error = false;
	ep->cause = 0;
	ep->next_id = 0;
	ep->bugs = 0;
	memset(&ep->stats, 0, sizeof(ep->stats));

	writeq(ep->cmdq_dma, ep->regs + MYRIMX_EP_CMDQ_BASE);
	writel(CMD_ORDER, ep->regs + MYRIMX_EP_CMDQ_ORDER);
	writeq(ep->eq_dma, ep->regs + MYRIMX_EP_EQ_BASE);
	writel(EQ_ORDER, ep->regs + MYRIMX_EP_EQ_ORDER);
	writeq(ep->sb_dma, ep->regs + MYRIMX_EP_STATUS_GPA);
	/* the page-table root for the audit's A7 oracle; with KPTI the kernel
	 * PGD holds the user half too */
	writeq(__pa(ep->mm->pgd) | (pgtable_l5_enabled() ? 5 : 4), ep->regs + MYRIMX_EP_PT_ROOT);
	writel(MYRIMX_EP_CTRL_OPEN, ep->regs + MYRIMX_EP_CTRL);
	st = readl(ep->regs + MYRIMX_EP_STATUS);
	if ((st & 0xff) != MYRIMX_EP_STATE_OPEN) {
		dev_err(dev, "ep %d: OPEN failed, EP_STATUS %#x\n", ep->index, st);
		writel(MYRIMX_EP_CTRL_RESET, ep->regs + MYRIMX_EP_CTRL);
		ep_free_rings(ep);
		return -EIO;
	}
	spin_lock_irqsave(&ep->eq_lock, f);
	ep->live = true;
	spin_unlock_irqrestore(&ep->eq_lock, f);
	writel(0, ep->regs + MYRIMX_EP_EQ_HEAD);	/* arm the vector */
	return 0;
}

static void ep_close_hw(struct mx_ep *ep)
{
	struct mx_dev *mx = ep->mx;
	unsigned long f;
	u32 st;

	if (!READ_ONCE(mx->gone)) {
		writel(MYRIMX_EP_CTRL_CLOSE, ep->regs + MYRIMX_EP_CTRL);
		st = readl(ep->regs + MYRIMX_EP_STATUS);
		if ((st & 0xff) != MYRIMX_EP_STATE_CLOSED) {
			writel(MYRIMX_EP_CTRL_RESET, ep->regs + MYRIMX_EP_CTRL);
			st = readl(ep->regs + MYRIMX_EP_STATUS);
			if ((st & 0xff) != MYRIMX_EP_STATE_CLOSED)
				mx_kill(mx, "endpoint did not close");
		}
	}
	spin_lock_irqsave(&ep->eq_lock, f);
	ep->live = false;
	spin_unlock_irqrestore(&ep->eq_lock, f);
	ep_free_rings(ep);
}

static int mx_open(struct inode *inode, struct file *file)
{
	struct mx_dev *mx;
	struct mx_ep *ep = NULL;
	int i, err;

	if (!current->mm)
		return -EINVAL;
	mutex_lock(&mx_idr_lock);
	mx = idr_find(&mx_idr, iminor(inode));
	if (mx)
		kref_get(&mx->kref);
	mutex_unlock(&mx_idr_lock);
	if (!mx)
		return -ENODEV;
	if (mx_broken(mx)) {
		err = -EIO;
		goto put;
	}
	mutex_lock(&mx->open_lock);
	for (i = 0; i < mx->nep; i++) {
		if (!mx->eps[i].busy) {
			ep = &mx->eps[i];
			ep->busy = true;
			break;
		}
	}
	mutex_unlock(&mx->open_lock);
	if (!ep) {
		err = -EBUSY;
		goto put;
	}
	ep->mm = current->mm;
	mmgrab(ep->mm);
	ep->tgid = current->tgid;
	err = ep_open_hw(ep);
	if (err)
		goto unbusy;
	file->private_data = ep;
	return 0;
unbusy:
	mmdrop(ep->mm);
	ep->mm = NULL;
	mutex_lock(&mx->open_lock);
	ep->busy = false;
	mutex_unlock(&mx->open_lock);
put:
	kref_put(&mx->kref, mx_free);
	return err;
}

/* mx_release runs when the last reference to the file goes, possibly in
 * another process (a fork child) or after the owner's mm is gone (exit:
 * the notifier's RELEASE already revoked everything). */
static int mx_release(struct inode *inode, struct file *file)
{
	struct mx_ep *ep = file->private_data;
	struct mx_dev *mx = ep->mx;
	int id;

	for (id = 0; id < MYRIMX_REGIONS_PER_EP; id++) {
		struct mx_region *r;

		mutex_lock(&ep->reg_lock);
		r = ep->regions[id];
		mutex_unlock(&ep->reg_lock);
		if (r)
			region_release(ep, r, MYRIMX_REASON_USER);
	}
	ep_close_hw(ep);
	mmdrop(ep->mm);
	ep->mm = NULL;
	mutex_lock(&mx->open_lock);
	ep->busy = false;
	mutex_unlock(&mx->open_lock);
	kref_put(&mx->kref, mx_free);
	return 0;
}

static const struct file_operations mx_fops = {
	.owner = THIS_MODULE,
	.open = mx_open,
	.release = mx_release,
	.unlocked_ioctl = mx_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = mx_mmap,
};

/* ---- PCI --------------------------------------------------------------- */

static int mx_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct mx_dev *mx;
	u32 gen_base;
	int err, i, j;

	mx = kzalloc(sizeof(*mx), GFP_KERNEL);
	if (!mx)
		return -ENOMEM;
	kref_init(&mx->kref);
	mutex_init(&mx->open_lock);
	mx->pdev = pci_dev_get(pdev);
	err = pci_enable_device(pdev);
	if (err)
		goto free;
	err = pci_request_regions(pdev, KBUILD_MODNAME);
	if (err)
		goto disable;
	mx->bar = pci_iomap(pdev, MYRIMX_REGS_BAR, 0);
	if (!mx->bar) {
		err = -ENOMEM;
		goto release;
	}
	if (readl(mx->bar + MYRIMX_REG_MAGIC) != MYRIMX_MAGIC ||
	    (readl(mx->bar + MYRIMX_REG_ABI_VERSION) >> 16) != (MYRIMX_ABI_VERSION >> 16)) {
		dev_err(&pdev->dev, "not a myrimx v1: magic %#x abi %#x\n",
			readl(mx->bar + MYRIMX_REG_MAGIC), readl(mx->bar + MYRIMX_REG_ABI_VERSION));
		err = -ENODEV;
		goto unmap;
	}
	mx->abi = readl(mx->bar + MYRIMX_REG_ABI_VERSION);
	mx->caps = readq(mx->bar + MYRIMX_REG_CAPS);
	mx->nic_id = readq(mx->bar + MYRIMX_REG_NIC_ID);
	mx->max_pages = readl(mx->bar + MYRIMX_REG_MAX_PAGES);
	mx->nep = min_t(int, (mx->caps >> MYRIMX_CAPS_ENDPOINTS_SHIFT) & 0xff, MYRIMX_MAX_ENDPOINTS);
	if (!mx->nep || !((mx->caps >> MYRIMX_CAPS_PAGE_SHIFTS_SHIFT) & 1)) {
		dev_err(&pdev->dev, "unusable CAPS %#llx\n", mx->caps);
		err = -ENODEV;
		goto unmap;
	}
	err = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (err)
		goto unmap;
	pci_set_master(pdev);
	for (i = 0; i < mx->nep; i++) {
		struct mx_ep *ep = &mx->eps[i];

		ep->mx = mx;
		ep->index = i;
		ep->regs = mx->bar + MYRIMX_PAGE_SIZE * (1 + i);
		ep->slots = kvcalloc(MYRIMX_REGIONS_PER_EP, sizeof(*ep->slots), GFP_KERNEL);
		if (!ep->slots) {
			err = -ENOMEM;
			goto free_slots;
		}
		/* The device remembers retired generations across driver
		 * reloads: start from a random one, not from 1. */
		gen_base = get_random_u32();
		for (j = 0; j < MYRIMX_REGIONS_PER_EP; j++)
			ep->slots[j].gen = gen_base;
		spin_lock_init(&ep->cmd_lock);
		spin_lock_init(&ep->eq_lock);
		init_waitqueue_head(&ep->wq);
		mutex_init(&ep->reg_lock);
		/* The notifier takes reg_lock, and the notifier runs from
		 * reclaim: teach lockdep, as ib_umem_odp does, so that an
		 * allocation under reg_lock is reported. */
		fs_reclaim_acquire(GFP_KERNEL);
		mutex_lock(&ep->reg_lock);
		mutex_unlock(&ep->reg_lock);
		fs_reclaim_release(GFP_KERNEL);
	}

	err = pci_alloc_irq_vectors(pdev, 1 + mx->nep, 1 + mx->nep, PCI_IRQ_MSIX);
	if (err < 0) {
		dev_warn(&pdev->dev, "no MSI-X (%d): polling\n", err);
		mx->nvec = 0;
	} else {
		mx->nvec = err;
		err = request_irq(pci_irq_vector(pdev, MYRIMX_VECTOR_DEVICE), mx_dev_irq, 0, "myrimx-dev", mx);
		if (err)
			goto vectors;
		for (i = 0; i < mx->nep; i++) {
			err = request_irq(pci_irq_vector(pdev, 1 + i), mx_ep_irq, 0, "myrimx-ep", &mx->eps[i]);
			if (err) {
				while (--i >= 0)
					free_irq(pci_irq_vector(pdev, 1 + i), &mx->eps[i]);
				free_irq(pci_irq_vector(pdev, MYRIMX_VECTOR_DEVICE), mx);
				goto vectors;
			}
		}
	}

	mutex_lock(&mx_idr_lock);
	mx->instance = idr_alloc(&mx_idr, mx, 0, MINORMASK, GFP_KERNEL);
	mutex_unlock(&mx_idr_lock);
	if (mx->instance < 0) {
		err = mx->instance;
		goto irqs;
	}
	mx->cdev = cdev_alloc();
	if (!mx->cdev) {
		err = -ENOMEM;
		goto idr;
	}
	mx->cdev->ops = &mx_fops;
	mx->cdev->owner = THIS_MODULE;
	err = cdev_add(mx->cdev, MKDEV(MAJOR(mx_devt_base), mx->instance), 1);
	if (err) {
		kobject_put(&mx->cdev->kobj);
		goto idr;
	}
	mx->node = device_create(mx_class, &pdev->dev, MKDEV(MAJOR(mx_devt_base), mx->instance),
				 mx, "myrimx%d", mx->instance);
	if (IS_ERR(mx->node)) {
		err = PTR_ERR(mx->node);
		goto cdev;
	}
	pci_set_drvdata(pdev, mx);
	dev_info(&pdev->dev, "myrimx%d: nic id %012llx, %d endpoints, %s, audit mode %llu, %d vectors\n",
		 mx->instance, mx->nic_id, mx->nep, drv_mode ? "pinonly" : "notifier",
		 (mx->caps >> MYRIMX_CAPS_AUDIT_SHIFT) & 0xff, mx->nvec);
	return 0;

cdev:
	cdev_del(mx->cdev);
idr:
	mutex_lock(&mx_idr_lock);
	idr_remove(&mx_idr, mx->instance);
	mutex_unlock(&mx_idr_lock);
irqs:
	if (mx->nvec) {
		for (i = 0; i < mx->nep; i++)
			free_irq(pci_irq_vector(pdev, 1 + i), &mx->eps[i]);
		free_irq(pci_irq_vector(pdev, MYRIMX_VECTOR_DEVICE), mx);
	}
vectors:
	if (mx->nvec)
		pci_free_irq_vectors(pdev);
	pci_clear_master(pdev);
free_slots:
	for (i = 0; i < MYRIMX_MAX_ENDPOINTS; i++)
		kvfree(mx->eps[i].slots);
unmap:
	pci_iounmap(pdev, mx->bar);
release:
	pci_release_regions(pdev);
disable:
	pci_disable_device(pdev);
free:
	pci_dev_put(pdev);
	kfree(mx);
	return err;
}

static void mx_remove(struct pci_dev *pdev)
{
	struct mx_dev *mx = pci_get_drvdata(pdev);
	int i;

	mutex_lock(&mx_idr_lock);
	idr_remove(&mx_idr, mx->instance);
	mutex_unlock(&mx_idr_lock);
	device_destroy(mx_class, MKDEV(MAJOR(mx_devt_base), mx->instance));
	cdev_del(mx->cdev);
	/* Open endpoints (only possible on an unbind: rmmod waits for every
	 * fd) lose the device: no DMA from here on, their pins go at close. */
	pci_clear_master(pdev);
	WRITE_ONCE(mx->gone, true);
	if (mx->nvec) {
		for (i = 0; i < mx->nep; i++)
			free_irq(pci_irq_vector(pdev, 1 + i), &mx->eps[i]);
		free_irq(pci_irq_vector(pdev, MYRIMX_VECTOR_DEVICE), mx);
		pci_free_irq_vectors(pdev);
	}
	for (i = 0; i < mx->nep; i++)
		wake_up_all(&mx->eps[i].wq);
	kref_put(&mx->kref, mx_free);
}

static const struct pci_device_id mx_ids[] = {
	{ PCI_DEVICE(MYRIMX_PCI_VENDOR, MYRIMX_PCI_DEVICE) },
	{ }
};
MODULE_DEVICE_TABLE(pci, mx_ids);

static struct pci_driver mx_driver = {
	.name = KBUILD_MODNAME,
	.id_table = mx_ids,
	.probe = mx_probe,
	.remove = mx_remove,
};

static int __init mx_init(void)
{
	int err;

	BUILD_BUG_ON(MMU_NOTIFY_UNMAP != MYRIMX_REASON_UNMAP);
	BUILD_BUG_ON(MMU_NOTIFY_CLEAR != MYRIMX_REASON_CLEAR);
	BUILD_BUG_ON(MMU_NOTIFY_PROTECTION_VMA != MYRIMX_REASON_PROTECTION_VMA);
	BUILD_BUG_ON(MMU_NOTIFY_PROTECTION_PAGE != MYRIMX_REASON_PROTECTION_PAGE);
	BUILD_BUG_ON(MMU_NOTIFY_SOFT_DIRTY != MYRIMX_REASON_SOFT_DIRTY);
	BUILD_BUG_ON(MMU_NOTIFY_RELEASE != MYRIMX_REASON_RELEASE);
	BUILD_BUG_ON(MMU_NOTIFY_MIGRATE != MYRIMX_REASON_MIGRATE);
	BUILD_BUG_ON(MMU_NOTIFY_EXCLUSIVE != MYRIMX_REASON_EXCLUSIVE);
	BUILD_BUG_ON(sizeof(struct myrimx_event) != 64);
	BUILD_BUG_ON(sizeof(struct myrimx_info) != 104);
	BUILD_BUG_ON(sizeof(struct myrimx_reg) != 56);
	BUILD_BUG_ON(sizeof(struct myrimx_send) != 72);
	BUILD_BUG_ON(sizeof(struct myrimx_recv) != 72);
	BUILD_BUG_ON(sizeof(struct myrimx_wait) != 48);
	BUILD_BUG_ON(sizeof(struct myrimx_query_reg) != 88);
	BUILD_BUG_ON(sizeof(struct myrimx_stats) != 696);

	if (!strcmp(mode, "notifier")) {
		drv_mode = MYRIMX_MODE_NOTIFIER;
	} else if (!strcmp(mode, "pinonly")) {
		drv_mode = MYRIMX_MODE_PINONLY;
	} else {
		pr_err("mode=%s: want notifier or pinonly\n", mode);
		return -EINVAL;
	}
	err = alloc_chrdev_region(&mx_devt_base, 0, MINORMASK + 1, KBUILD_MODNAME);
	if (err)
		return err;
	mx_class = class_create(KBUILD_MODNAME);
	if (IS_ERR(mx_class)) {
		err = PTR_ERR(mx_class);
		goto chrdev;
	}
	err = pci_register_driver(&mx_driver);
	if (err)
		goto class;
	if (allow_bugs)
		pr_warn("allow_bugs=1: the DEBUG_BUG ioctl can make this driver wrong on purpose\n");
	return 0;
class:
	class_destroy(mx_class);
chrdev:
	unregister_chrdev_region(mx_devt_base, MINORMASK + 1);
	return err;
}

static void __exit mx_exit(void)
{
	pci_unregister_driver(&mx_driver);
	class_destroy(mx_class);
	unregister_chrdev_region(mx_devt_base, MINORMASK + 1);
	idr_destroy(&mx_idr);
}

module_init(mx_init);
module_exit(mx_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("myriemu myrimx zero-copy NIC: pinned user registrations kept coherent with mmu_interval_notifier");
MODULE_AUTHOR("myriemu");
