// SPDX-License-Identifier: GPL-2.0
/*
 * myrimx_mm: a test helper that makes the kernel send MMU_NOTIFY_MIGRATE and
 * MMU_NOTIFY_EXCLUSIVE over a range of the calling process.
 *
 * No system call produces these two events: only a driver calling
 * migrate_vma_setup() (HMM device-private migration) or
 * make_device_exclusive() (device atomics) does, and the Debian kernel does
 * not build test_hmm. This module is such a caller, reduced to the part that
 * fires the notifiers, so that myrimx's interval notifier can be checked
 * against both reasons (zero-copy-design.md 3.3 and 6.10, scenarios 13, 14).
 *
 * Each ioctl leaves the process as it found it:
 *  - MIGRATE selects system pages, offers no destination, and lets
 *    migrate_vma_finalize() map every collected page back where it was;
 *  - EXCLUSIVE converts each page, drops the folio at once (no device ever
 *    uses it), and faults it back in with a write GUP, as the CPU would.
 * The owner passed to both is the address of a byte of this module, so a
 * notifier that filters on its own owner (as HMM drivers do) sees a stranger.
 */
#include <linux/fs.h>
#include <linux/init.h>
#include <linux/miscdevice.h>
#include <linux/migrate.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/module.h>
#include <linux/rmap.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "myrimx_mm_ioctl.h"

/* The owner of our migrations and exclusive entries: an address no other
 * driver can hold. */
static char myrimx_mm_owner;

/* range_vma finds the VMA that holds [start, start+len) whole, with the
 * mmap lock held. */
static struct vm_area_struct *range_vma(struct mm_struct *mm,
					unsigned long start, unsigned long len)
{
	struct vm_area_struct *vma = vma_lookup(mm, start);

	if (!vma || start + len > vma->vm_end)
		return NULL;
	return vma;
}

static int check_range(u64 va, u64 npages)
{
	if (!PAGE_ALIGNED(va) || npages == 0 || npages > MYRIMX_MM_MAX_PAGES)
		return -EINVAL;
	if (va + (npages << PAGE_SHIFT) < va || va + (npages << PAGE_SHIFT) > TASK_SIZE)
		return -EINVAL;
	return 0;
}

static long do_migrate(struct myrimx_mm_migrate __user *uarg)
{
	struct mm_struct *mm = current->mm;
	struct myrimx_mm_migrate arg;
	struct migrate_vma mig = {};
	unsigned long *pfns;
	unsigned long i, npages;
	int ret;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	if (!PAGE_ALIGNED(arg.len))
		return -EINVAL;
	npages = arg.len >> PAGE_SHIFT;
	ret = check_range(arg.va, npages);
	if (ret)
		return ret;
	if (!mm)
		return -EINVAL;

	/* src and dst side by side; dst stays all zero: no destination. */
	pfns = kvcalloc(2 * npages, sizeof(*pfns), GFP_KERNEL);
	if (!pfns)
		return -ENOMEM;

	if (mmap_read_lock_killable(mm)) {
		kvfree(pfns);
		return -EINTR;
	}
	mig.vma = range_vma(mm, arg.va, arg.len);
	if (!mig.vma) {
		ret = -EFAULT;
		goto out;
	}
	mig.start = arg.va;
	mig.end = arg.va + arg.len;
	mig.src = pfns;
	mig.dst = pfns + npages;
	mig.pgmap_owner = &myrimx_mm_owner;
	mig.flags = MIGRATE_VMA_SELECT_SYSTEM;

	/* Fires MMU_NOTIFY_MIGRATE over [start, end) with our owner, then
	 * isolates and unmaps what it can: pinned pages stay mapped. */
	ret = migrate_vma_setup(&mig);
	if (ret)
		goto out;
	arg.npages = mig.npages;
	arg.cpages = mig.cpages;

	/* With every dst entry empty, this only clears MIGRATE_PFN_MIGRATE. */
	migrate_vma_pages(&mig);
	arg.migrated = 0;
	arg.restored = 0;
	for (i = 0; i < mig.npages; i++) {
		if ((mig.src[i] & MIGRATE_PFN_MIGRATE) && migrate_pfn_to_page(mig.dst[i]))
			arg.migrated++;
		if (migrate_pfn_to_page(mig.src[i]))
			arg.restored++;
	}
	/* Every collected page is mapped again at its own address. */
	migrate_vma_finalize(&mig);
out:
	mmap_read_unlock(mm);
	kvfree(pfns);
	if (ret)
		return ret;
	if (copy_to_user(uarg, &arg, sizeof(arg)))
		return -EFAULT;
	return 0;
}

/* restore_page faults a device-exclusive page back in, as a CPU write would:
 * GUP finds no present PTE and goes through handle_mm_fault, which removes
 * the device-exclusive entry. */
static int restore_page(struct mm_struct *mm, unsigned long addr)
{
	struct page *page;
	long got;

	got = get_user_pages_remote(mm, addr, 1, FOLL_WRITE, &page, NULL);
	if (got < 0)
		return got;
	if (got != 1)
		return -EFAULT;
	put_page(page);
	return 0;
}

static long do_exclusive(struct myrimx_mm_exclusive __user *uarg)
{
	struct mm_struct *mm = current->mm;
	struct myrimx_mm_exclusive arg;
	unsigned long addr, end;
	int ret;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	if (arg.flags & ~MYRIMX_MM_EXCL_LEAVE)
		return -EINVAL;
	ret = check_range(arg.va, arg.npages);
	if (ret)
		return ret;
	if (!mm)
		return -EINVAL;
	arg.error = 0;
	arg.converted = 0;
	arg.restored = 0;
	end = arg.va + (arg.npages << PAGE_SHIFT);

	if (mmap_read_lock_killable(mm))
		return -EINTR;
	if (!range_vma(mm, arg.va, end - arg.va)) {
		mmap_read_unlock(mm);
		return -EFAULT;
	}
	for (addr = arg.va; addr < end; addr += PAGE_SIZE) {
		struct folio *folio;
		struct page *page;

		/* Fires MMU_NOTIFY_EXCLUSIVE for this page with our owner and
		 * returns the folio locked and referenced. */
		page = make_device_exclusive(mm, addr, &myrimx_mm_owner, &folio);
		if (IS_ERR(page)) {
			arg.error = PTR_ERR(page);
			break;
		}
		arg.converted++;
		/* A device would program its atomic mapping here. */
		folio_unlock(folio);
		folio_put(folio);
	}
	if (!(arg.flags & MYRIMX_MM_EXCL_LEAVE)) {
		for (addr = arg.va; addr < arg.va + (arg.converted << PAGE_SHIFT);
		     addr += PAGE_SIZE) {
			ret = restore_page(mm, addr);
			if (ret) {
				if (!arg.error)
					arg.error = ret;
				break;
			}
			arg.restored++;
		}
	}
	mmap_read_unlock(mm);
	if (copy_to_user(uarg, &arg, sizeof(arg)))
		return -EFAULT;
	return 0;
}

static long myrimx_mm_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	switch (cmd) {
	case MYRIMX_MM_MIGRATE:
		return do_migrate((struct myrimx_mm_migrate __user *)arg);
	case MYRIMX_MM_EXCLUSIVE:
		return do_exclusive((struct myrimx_mm_exclusive __user *)arg);
	}
	return -ENOTTY;
}

static const struct file_operations myrimx_mm_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = myrimx_mm_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

static struct miscdevice myrimx_mm_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "myrimx_mm",
	.fops = &myrimx_mm_fops,
	.mode = 0600,
};

static int __init myrimx_mm_init(void)
{
	int ret = misc_register(&myrimx_mm_dev);

	if (ret)
		return ret;
	pr_info("myrimx_mm: loaded (MIGRATE, EXCLUSIVE on the caller's own range)\n");
	return 0;
}

static void __exit myrimx_mm_exit(void)
{
	misc_deregister(&myrimx_mm_dev);
	pr_info("myrimx_mm: unloaded\n");
}

module_init(myrimx_mm_init);
module_exit(myrimx_mm_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("myriemu test helper: MMU_NOTIFY_MIGRATE and MMU_NOTIFY_EXCLUSIVE on demand");
