// SPDX-License-Identifier: GPL-2.0
/*
 * run_warn_on: a module with a deliberate WARN_ON at load, for the e2e test
 * of `myriemu run --build-module`: the load succeeds, the kernel prints a
 * WARNING splat, and run must report it and exit non-zero.
 */
#include <linux/bug.h>
#include <linux/init.h>
#include <linux/module.h>

static int __init run_warn_on_init(void)
{
	pr_info("run_warn_on: loading, about to warn on purpose\n");
	WARN_ON(1);
	return 0;
}

static void __exit run_warn_on_exit(void)
{
}

module_init(run_warn_on_init);
module_exit(run_warn_on_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("myriemu e2e: myriemu run reports a WARN_ON at load");
