/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note OR MIT) */
/*
 * myrimx_ioctl.h - the user-space ABI of the myrimx guest kernel module
 * (guestdrv/modules/myrimx): ioctls on /dev/myrimx<N>, one endpoint per
 * open file. The device ABI underneath is myrimx_abi.h; the design is
 * shared/reference/zero-copy-design.md section 6.8; the module is
 * described in docs/myrimx-driver.md.
 *
 * Rules of this header, so that a static user program can use it alone:
 * - only <linux/types.h> and <linux/ioctl.h>;
 * - every struct has a fixed size, every field its natural alignment,
 *   explicit padding (must be zero on input), user pointers are __u64;
 * - numbers are only ever ADDED (new ioctl numbers, new fields in the
 *   reserved tails, new constants); nothing is renumbered or resized.
 *
 * The file descriptor belongs to the process (mm and tgid) that opened it:
 * any ioctl or mmap from another one (a fork child, a thread group that
 * received the fd over a socket) fails with EIO, as kdreg2 does.
 */
#ifndef MYRIMX_IOCTL_H
#define MYRIMX_IOCTL_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define MYRIMX_IOCTL_VERSION      1

/* Device nodes: /dev/myrimx<N>, N = 0, 1, ... in probe order. Without
 * devtmpfs or udev, /sys/class/myrimx/myrimx<N>/dev holds "major:minor"
 * for mknod. */
#define MYRIMX_DEV_PREFIX         "/dev/myrimx"
#define MYRIMX_SYSFS_CLASS        "/sys/class/myrimx"

/* Module parameter mode= */
#define MYRIMX_MODE_NOTIFIER      0 /* pin + one mmu_interval_notifier per registration (default) */
#define MYRIMX_MODE_PINONLY       1 /* FOLL_LONGTERM pin, no notifier: the classic user-space-cache design */

/* Region ids are 0 .. max_regions-1. Generations are never 0. */
#define MYRIMX_GEN_NONE           0

/* ---- INFO ---------------------------------------------------------- */
struct myrimx_info {
	__u64 nic_id;           /* 48-bit MX nic id of this function */
	__u64 caps;             /* the device's CAPS register (myrimx_abi.h) */
	__u32 abi_version;      /* the device's ABI_VERSION register */
	__u32 ioctl_version;    /* MYRIMX_IOCTL_VERSION */
	__u32 endpoint;         /* the endpoint this fd opened (dest_ep for peers) */
	__u32 mode;             /* MYRIMX_MODE_* */
	__u32 max_regions;      /* region ids are 0 .. max_regions-1 */
	__u32 max_pages;        /* most pages in one registration */
	__u32 audit_mode;       /* MYRIMX_AUDIT_* from CAPS */
	__u32 allow_bugs;       /* module parameter allow_bugs */
	__u32 bugs;             /* MYRIMX_BUG_* active on this endpoint */
	__u32 instance;         /* N of /dev/myrimx<N> */
	__u64 gen_map_size;     /* bytes to mmap at offset MYRIMX_GEN_MAP_OFFSET */
	__u32 fence_timeout_ms; /* module parameter */
	__u32 dev_dead;         /* 1 once a fence timed out: bus master is off */
	__u32 info_flags;       /* MYRIMX_INFO_*: which of the fields below are filled */
	__u32 audit_count;      /* the device's AUDIT_COUNT register (violations seen,
				 * all modes, wraps at 2^32), read during this INFO */
	__u64 rsvd[3];
};

/* myrimx_info.info_flags (a module older than these fields leaves 0) */
#define MYRIMX_INFO_AUDIT_COUNT   0x1 /* audit_count was read from the device */

/* ---- REG ----------------------------------------------------------- */
#define MYRIMX_ACCESS_SEND        0x1 /* = MYRIMX_ACCESS_SEND_SRC: the device reads */
#define MYRIMX_ACCESS_RECV        0x2 /* = MYRIMX_ACCESS_RECV_DST: the device writes (FOLL_WRITE) */

#define MYRIMX_REG_LONGTERM       0x1 /* add FOLL_LONGTERM in notifier mode (always in pinonly) */

struct myrimx_reg {
	__u64 va;               /* in: any byte alignment */
	__u64 len;              /* in: > 0 */
	__u32 access;           /* in: MYRIMX_ACCESS_* (at least one) */
	__u32 flags;            /* in: MYRIMX_REG_* */
	__u32 id;               /* out: region id */
	__u32 generation;       /* out: generation of (id); gen_map[id] equals it while valid */
	__u32 nr_pages;         /* out: pages pinned */
	__u32 seq_retries;      /* out: read_begin/read_retry collisions absorbed by this REG */
	__u64 rsvd[2];
};

/* ---- DEREG --------------------------------------------------------- */
/* Succeeds for a live (id, generation) and for one the notifier already
 * invalidated (the slot is then freed); ESTALE for another generation,
 * EINVAL for a free id. */
struct myrimx_dereg {
	__u32 id;
	__u32 generation;
	__u64 rsvd;
};

/* ---- SEND / RECV --------------------------------------------------- */
/* The driver checks (id, generation) is valid before posting (ESTALE if
 * not, EACCES without the access) and the device checks it again; the
 * result comes back by WAIT with the cookie. With MYRIMX_XFER_UNCHECKED
 * the driver posts any (id, generation) and only the device decides (its
 * BAD_RDMAWIN / REGION_INVALIDATED completions are what a test of the
 * device's own checks, or of the pinonly cache bug, wants to see). */
#define MYRIMX_XFER_UNCHECKED     0x1
struct myrimx_send {
	__u32 id;
	__u32 generation;
	__u64 offset;           /* into the registration */
	__u32 len;
	__u16 dest_ep;
	__u16 pad0;
	__u64 dest_nic;
	__u64 match;
	__u64 cookie;           /* echoed in the completion */
	__u32 cmd_seq;          /* out: the device command's cmd_seq */
	__u32 flags;            /* in: MYRIMX_XFER_* */
	__u64 rsvd[2];
};

struct myrimx_recv {
	__u32 id;
	__u32 generation;
	__u64 offset;
	__u32 len;
	__u32 pad0;
	__u64 match;
	__u64 mask;             /* (msg.match & mask) == (match & mask) */
	__u64 cookie;
	__u32 cmd_seq;          /* out */
	__u32 flags;            /* in: MYRIMX_XFER_* */
	__u64 rsvd[2];
};

/* ---- WAIT ---------------------------------------------------------- */
/* Completion types */
#define MYRIMX_EVENT_SEND_DONE       1
#define MYRIMX_EVENT_RECV_DONE       2
#define MYRIMX_EVENT_REGION_REVOKED  3 /* the device revoked (id, gen) itself (QEMU DMA_UNMAP, reset) */
#define MYRIMX_EVENT_ENDPOINT_ERROR  4 /* the endpoint failed; status says why, reason is the device cause */
#define MYRIMX_EVENT_CANCEL_DONE     5

/* Completion statuses: 0..13 are the device's MYRIMX_STATUS_* values,
 * mapped one to one; 32 and up are the driver's own. */
#define MYRIMX_WAIT_OK                  0
#define MYRIMX_WAIT_TRUNCATED           1
#define MYRIMX_WAIT_CANCELLED           2
#define MYRIMX_WAIT_BAD_RDMAWIN         3
#define MYRIMX_WAIT_REGION_INVALIDATED  4
#define MYRIMX_WAIT_ACCESS              5
#define MYRIMX_WAIT_BAD_ENDPOINT        6
#define MYRIMX_WAIT_ENDPOINT_CLOSED     7
#define MYRIMX_WAIT_NO_RESOURCES        8
#define MYRIMX_WAIT_DMA_FAULT           9
#define MYRIMX_WAIT_BUSY                10
#define MYRIMX_WAIT_BAD_ADDRESS         11
#define MYRIMX_WAIT_BAD_COMMAND         12
#define MYRIMX_WAIT_NOT_FOUND           13
#define MYRIMX_WAIT_DEVICE_DEAD         32 /* a fence timed out; bus master cleared */
#define MYRIMX_WAIT_EVENTQ_FULL         33 /* the device's event queue overflowed */

struct myrimx_event {           /* 64 bytes */
	__u32 type;             /* MYRIMX_EVENT_* */
	__u32 status;           /* MYRIMX_WAIT_* */
	__u64 cookie;
	__u64 match;            /* the message's match (RECV_DONE) */
	__u64 src_nic;          /* RECV_DONE: sender */
	__u32 src_ep;
	__u32 msg_len;          /* RECV_DONE: the message's length */
	__u32 xfer_len;         /* bytes that reached the receiver */
	__u32 cmd_seq;
	__u32 region_id;
	__u32 generation;
	__u32 reason;           /* REGION_REVOKED: MYRIMX_REASON_*; ENDPOINT_ERROR: MYRIMX_EP_CAUSE_* */
	__u32 pad0;
};

struct myrimx_wait {
	__u64 events;           /* in: user pointer to max struct myrimx_event */
	__u32 max;              /* in: > 0 */
	__s32 timeout_ms;       /* in: 0 polls, < 0 waits until an event or a signal */
	__u32 count;            /* out: events written (0 on timeout) */
	__u32 pad0;
	__u64 dropped;          /* out: completions lost since open (user queue full) */
	__u64 rsvd[2];
};

/* ---- QUERY_REG ----------------------------------------------------- */
#define MYRIMX_REGION_FREE          0 /* never used, or DEREGed */
#define MYRIMX_REGION_PINNING       1 /* REG in progress */
#define MYRIMX_REGION_VALID         2 /* the device may DMA */
#define MYRIMX_REGION_INVALIDATING  3 /* DEREG + FENCE in flight */
#define MYRIMX_REGION_INVALID       4 /* invalidated (notifier or device), unpinned, awaiting DEREG */

struct myrimx_query_reg {
	__u32 id;               /* in */
	__u32 max_gpas;         /* in: entries of gpas */
	__u64 gpas;             /* in: user pointer to max_gpas __u64, or 0 */
	__u32 state;            /* out: MYRIMX_REGION_* */
	__u32 generation;       /* out: current (or last) generation */
	__u32 nr_pages;         /* out */
	__u32 nr_gpas;          /* out: entries written (the registered GPA of every page while VALID, else the last ones) */
	__u64 va;               /* out */
	__u64 len;              /* out */
	__u32 access;           /* out */
	__u32 last_reason;      /* out: MYRIMX_REASON_* of the last invalidation, or MYRIMX_REASON_NONE */
	__u64 invalidations;    /* out: invalidations of this id since open (every generation) */
	__u32 pins;             /* out: pages pinned now */
	__u32 pad0;
	__u64 rsvd[2];
};

#define MYRIMX_REASON_NONE        0xff

/* ---- STATS --------------------------------------------------------- */
#define MYRIMX_STATS_ENDPOINT     0 /* this fd's endpoint since open */
#define MYRIMX_STATS_GLOBAL       1 /* the whole module since load (survives close and exit) */

#define MYRIMX_NR_REASONS         16 /* index = MYRIMX_REASON_* (0..7 = MMU_NOTIFY_*) */
#define MYRIMX_FENCE_HIST         16 /* bucket i counts fences of [2^i, 2^(i+1)) us; 0 also < 1 us; 15 also longer */

struct myrimx_stats {
	__u32 scope;                    /* in: MYRIMX_STATS_* */
	__u32 pad0;
	__u64 invalidations[MYRIMX_NR_REASONS]; /* callbacks (and DEREGs) that revoked a valid registration, per reason */
	__u64 callbacks[MYRIMX_NR_REASONS];     /* notifier callbacks per reason, spurious ones included */
	__u64 spurious;                 /* callbacks that found nothing valid to revoke */
	__u64 nonblock_refused;         /* non-blockable callbacks answered false */
	__u64 seq_retries;              /* read_retry collisions during REG */
	__u64 reg_ok;
	__u64 reg_failed;
	__u64 dereg;                    /* DEREG commands sent to the device */
	__u64 fences;                   /* fences waited for */
	__u64 fence_ns_min;
	__u64 fence_ns_max;
	__u64 fence_ns_sum;
	__u64 fence_hist[MYRIMX_FENCE_HIST];
	__u64 fence_timeouts;
	__u64 pins_held;                /* pages pinned now */
	__u64 pins_acquired;            /* pages pinned, total */
	__u64 pins_released;            /* pages unpinned, total */
	__u64 sends;
	__u64 recvs;
	__u64 completions;              /* user completions queued */
	__u64 completions_dropped;      /* user queue full */
	__u64 wrong_process;            /* ioctls/mmaps refused: other mm or tgid */
	__u64 regions_revoked;          /* REGION_REVOKED events from the device */
	__u64 irqs;
	__u64 bugs_applied;             /* invalidations or REGs where a MYRIMX_BUG_* changed what happened */
	__u64 rsvd[16];
};

/* ---- DEBUG_BUG ----------------------------------------------------- */
/* Only with the module parameter allow_bugs=1 (else EPERM). Per endpoint;
 * 0 turns them off. Each bug makes the driver wrong on purpose so that the
 * device's DMA audit must catch it. */
#define MYRIMX_BUG_SKIP_INVALIDATE    0x1 /* callback counts the reason but leaves the registration valid and pinned */
#define MYRIMX_BUG_UNPIN_BEFORE_FENCE 0x2 /* unpin, then DEREG + FENCE */
#define MYRIMX_BUG_NO_FENCE_WAIT      0x4 /* DEREG + FENCE posted, not waited for */
#define MYRIMX_BUG_NO_SEQ_RETRY       0x8 /* REG publishes pages even when read_retry says they are stale */
#define MYRIMX_BUG_NO_DIRTY           0x10 /* written pages unpinned without being marked dirty */
#define MYRIMX_BUG_ALL                0x1f

struct myrimx_debug_bug {
	__u32 bugs;             /* MYRIMX_BUG_* */
	__u32 pad0;
	__u64 rsvd;
};

/* ---- Generation map (mmap) ------------------------------------------ */
/* mmap(NULL, info.gen_map_size, PROT_READ, MAP_SHARED, fd,
 * MYRIMX_GEN_MAP_OFFSET) maps one __u32 per region id: gen_map[id] equals
 * the generation REG returned while (id, generation) is valid, and
 * changes (to MYRIMX_GEN_NONE) before an invalidation's callback returns.
 * A cache validates a hit with one load: myrimx_gen_valid(). Writable
 * mappings are refused. */
#define MYRIMX_GEN_MAP_OFFSET     0

static inline int myrimx_gen_valid(const volatile __u32 *gen_map, __u32 id, __u32 generation)
{
	return gen_map[id] == generation;
}

/* ---- ioctl numbers (never renumber) ---------------------------------- */
#define MYRIMX_IOC_MAGIC          'X'
#define MYRIMX_IOC_INFO           _IOR(MYRIMX_IOC_MAGIC, 0x00, struct myrimx_info)
#define MYRIMX_IOC_REG            _IOWR(MYRIMX_IOC_MAGIC, 0x01, struct myrimx_reg)
#define MYRIMX_IOC_DEREG          _IOW(MYRIMX_IOC_MAGIC, 0x02, struct myrimx_dereg)
#define MYRIMX_IOC_SEND           _IOWR(MYRIMX_IOC_MAGIC, 0x03, struct myrimx_send)
#define MYRIMX_IOC_RECV           _IOWR(MYRIMX_IOC_MAGIC, 0x04, struct myrimx_recv)
#define MYRIMX_IOC_WAIT           _IOWR(MYRIMX_IOC_MAGIC, 0x05, struct myrimx_wait)
#define MYRIMX_IOC_QUERY_REG      _IOWR(MYRIMX_IOC_MAGIC, 0x06, struct myrimx_query_reg)
#define MYRIMX_IOC_STATS          _IOWR(MYRIMX_IOC_MAGIC, 0x07, struct myrimx_stats)
#define MYRIMX_IOC_DEBUG_BUG      _IOW(MYRIMX_IOC_MAGIC, 0x08, struct myrimx_debug_bug)

#endif /* MYRIMX_IOCTL_H */
