// SPDX-License-Identifier: GPL-2.0
/*
 * e2e_hello: the smallest out-of-tree module, built by the e2e harness
 * against the guest kernel's headers to prove the module pipeline (kbuild
 * in the sid rootfs, initramfs, insmod with a parameter) before the real
 * guest drivers use it.
 */
#include <linux/init.h>
#include <linux/module.h>
#include <linux/moduleparam.h>

static int answer = 0;
module_param(answer, int, 0444);
MODULE_PARM_DESC(answer, "value echoed in the load message and in sysfs");

static int __init e2e_hello_init(void)
{
	pr_warn("e2e_hello: loaded answer=%d\n", answer);
	return 0;
}

static void __exit e2e_hello_exit(void)
{
	pr_warn("e2e_hello: unloaded\n");
}

module_init(e2e_hello_init);
module_exit(e2e_hello_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("myriemu e2e harness: module pipeline check");
