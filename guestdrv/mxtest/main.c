// SPDX-License-Identifier: GPL-2.0
/*
 * mxtest - the guest test program of the myrimx zero-copy driver
 * (guestdrv/modules/myrimx, issue 12). Usage:
 *
 *   mxtest [-v] [-dev N | -audit observe|enforce] [-peer-nic NIC] [-seed S] SCENARIO [ARG]
 *   mxtest [-dev N] peer [-max-seconds S]        (guest B)
 *   mxtest info                                  (every /dev/myrimxN)
 *
 * Each scenario prints one E2E-RESULT line (mx:<name>); see mx.h. Exit
 * status 0 when it passed or was skipped.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include "mx.h"
#include "scenarios.h"

static int cmd_info(void)
{
	int n = 0;
	for (int i = 0; i < 8; i++) {
		struct ep e;
		v_begin("info");
		if (ep_open(&e, i) != 0)
			continue;
		printf("myrimx%d: nic %#llx endpoint %u mode %u audit %u allow_bugs %u max_regions %u max_pages %u fence_timeout_ms %u audit_count %ld\n",
		       i, (unsigned long long)e.info.nic_id, e.info.endpoint, e.info.mode, e.info.audit_mode,
		       e.info.allow_bugs, e.info.max_regions, e.info.max_pages, e.info.fence_timeout_ms, audit_count(i));
		ep_close(&e);
		n++;
	}
	return n ? 0 : 1;
}

static void usage(void)
{
	fprintf(stderr, "usage: mxtest [-v] [-dev N | -audit observe|enforce] [-peer-nic NIC] [-seed S] "
			"munmap|mremap|map-fixed|dontneed|free-pageout|mprotect|fork|soft-dirty|exit|close|cache|"
			"skip-invalidate|no-fence-wait|unpin-before-fence|race [N]|race-bug [N]|fence-timeout|"
			"stale-generation|perf [ROUNDS]|peer|quit|info\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int i = 1;
	O.seed = 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-v"))
			verbose = 1;
		else if (!strcmp(argv[i], "-dev") && i + 1 < argc)
			O.dev = atoi(argv[++i]);
		else if (!strcmp(argv[i], "-audit") && i + 1 < argc) {
			const char *m = argv[++i];
			int want = !strcmp(m, "enforce") ? MYRIMX_AUDIT_ENFORCE : !strcmp(m, "observe") ? MYRIMX_AUDIT_OBSERVE : -1;
			O.dev = find_instance(want);
			if (O.dev < 0) {
				printf("E2E-RESULT name=mx:setup status=fail detail=no /dev/myrimxN with audit=%s\n", m);
				return 1;
			}
		} else if (!strcmp(argv[i], "-peer-nic") && i + 1 < argc)
			O.peer_nic = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "-seed") && i + 1 < argc)
			O.seed = (unsigned)strtoul(argv[++i], NULL, 0);
		else
			usage();
	}
	if (i >= argc)
		usage();
	const char *c = argv[i];
	int n = i + 1 < argc ? atoi(argv[i + 1]) : 0;
	if (!strcmp(c, "munmap"))
		return s_munmap();
	if (!strcmp(c, "mremap"))
		return s_mremap();
	if (!strcmp(c, "map-fixed"))
		return s_mapfixed();
	if (!strcmp(c, "dontneed"))
		return s_dontneed();
	if (!strcmp(c, "free-pageout"))
		return s_free_pageout();
	if (!strcmp(c, "mprotect"))
		return s_mprotect();
	if (!strcmp(c, "fork"))
		return s_fork();
	if (!strcmp(c, "soft-dirty"))
		return s_softdirty();
	if (!strcmp(c, "exit"))
		return s_exit();
	if (!strcmp(c, "close"))
		return s_close();
	if (!strcmp(c, "cache"))
		return s_cache();
	if (!strcmp(c, "skip-invalidate"))
		return s_skip_invalidate();
	if (!strcmp(c, "no-fence-wait") || !strcmp(c, "unpin-before-fence"))
		return s_fence_bug(c);
	if (!strcmp(c, "race"))
		return s_race(n ? n : 100, 0);
	if (!strcmp(c, "race-bug"))
		return s_race(n ? n : 300, 1);
	if (!strcmp(c, "fence-timeout"))
		return s_fence_timeout();
	if (!strcmp(c, "stale-generation"))
		return s_genreuse();
	if (!strcmp(c, "perf"))
		return s_perf(n ? n : 2);
	if (!strcmp(c, "reset-hold") || !strcmp(c, "reset-peer"))
		return c[6] == 'h' ? s_reset_hold(n ? n : 300) : s_reset_peer(n ? n : 300);
	if (!strcmp(c, "peer"))
		return cmd_peer(argc - i, argv + i);
	if (!strcmp(c, "info"))
		return cmd_info();
	if (!strcmp(c, "quit")) {
		struct ep e;
		v_begin("peer-quit");
		if (ep_open(&e, O.dev) == 0) {
			int rc = peer_ask(&e, O.peer_nic, PEER_OP_QUIT, 0, 0, 0, 0, 0, 0, 0, 0);
			CHECK(rc == 0, "QUIT: %s", strerror(-rc));
			ep_close(&e);
		}
		return v_end();
	}
	usage();
	return 2;
}
