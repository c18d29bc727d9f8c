// SPDX-License-Identifier: GPL-2.0
/*
 * run_broken: a module that does not compile, for the e2e test of
 * `myriemu run --build-module`: gcc's error must be shown as it is, and run
 * must exit 2 before booting anything.
 */
#include <linux/init.h>
#include <linux/module.h>

static int __init run_broken_init(void)
{
	return run_broken_undeclared_identifier;
}

module_init(run_broken_init);
MODULE_LICENSE("GPL");
