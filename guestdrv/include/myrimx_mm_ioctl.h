/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note OR MIT) */
/*
 * myrimx_mm_ioctl.h - the ioctls of the myrimx_mm helper module.
 *
 * myrimx_mm makes the two MMU-notifier events that no system call produces
 * on a range of the calling process, so that a driver's interval notifier
 * (myrimx's) can be tested against them:
 *
 *   MYRIMX_MM_MIGRATE   migrate_vma_setup(MIGRATE_VMA_SELECT_SYSTEM) with the
 *                       helper's own pgmap owner: MMU_NOTIFY_MIGRATE over the
 *                       range. No destination page is given, so nothing
 *                       moves: migrate_vma_finalize puts every page back.
 *   MYRIMX_MM_EXCLUSIVE make_device_exclusive() on each page, with the
 *                       helper's own owner: MMU_NOTIFY_EXCLUSIVE per page.
 *                       The helper then faults the pages back in (unless
 *                       MYRIMX_MM_EXCL_LEAVE); on the 7.2 guest kernel that
 *                       restoring fault sends MMU_NOTIFY_CLEAR (seen in
 *                       myrimx's counters), as the CPU's own touch does.
 *
 * The device node is /dev/myrimx_mm. This file is guestdrv/include's, where
 * user programs find it; guestdrv/modules/myrimx_mm holds a byte-identical
 * copy because kbuild sees only the module's own directory
 * (guestdrv/include/mm_header_test.go keeps the two equal).
 */
#ifndef MYRIMX_MM_IOCTL_H
#define MYRIMX_MM_IOCTL_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define MYRIMX_MM_DEVICE     "/dev/myrimx_mm"
#define MYRIMX_MM_MAX_PAGES  512 /* per call: 2 MiB of 4 KiB pages */

/* MYRIMX_MM_MIGRATE: va and len page-aligned, inside one VMA. */
struct myrimx_mm_migrate {
	__u64 va;       /* in */
	__u64 len;      /* in: bytes */
	__u64 npages;   /* out: pages migrate_vma_setup walked */
	__u64 cpages;   /* out: pages it isolated and unmapped (migratable) */
	__u64 migrated; /* out: pages still marked migrating after migrate_vma_pages
			 * (0: no destination was offered) */
	__u64 restored; /* out: pages migrate_vma_finalize mapped back */
};

/* MYRIMX_MM_EXCLUSIVE: va page-aligned; npages pages of an anonymous
 * writable mapping. */
struct myrimx_mm_exclusive {
	__u64 va;        /* in */
	__u64 npages;    /* in: 1..MYRIMX_MM_MAX_PAGES */
	__u32 flags;     /* in: MYRIMX_MM_EXCL_* */
	__s32 error;     /* out: 0, or the -errno of the first page that failed */
	__u64 converted; /* out: pages made device-exclusive */
	__u64 restored;  /* out: pages the helper faulted back in */
};

#define MYRIMX_MM_EXCL_LEAVE 0x1 /* leave the entries: the CPU's next touch restores them */

#define MYRIMX_MM_IOC_MAGIC  'M'
#define MYRIMX_MM_MIGRATE    _IOWR(MYRIMX_MM_IOC_MAGIC, 1, struct myrimx_mm_migrate)
#define MYRIMX_MM_EXCLUSIVE  _IOWR(MYRIMX_MM_IOC_MAGIC, 2, struct myrimx_mm_exclusive)

#endif /* MYRIMX_MM_IOCTL_H */
