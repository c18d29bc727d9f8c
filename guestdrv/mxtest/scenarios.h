/* SPDX-License-Identifier: GPL-2.0 */
#ifndef MXTEST_SCENARIOS_H
#define MXTEST_SCENARIOS_H
#include <stdint.h>

struct opts {
	int dev;          /* /dev/myrimx<dev> */
	uint64_t peer_nic;
	unsigned seed;
};
extern struct opts O;

int s_munmap(void);
int s_mremap(void);
int s_mapfixed(void);
int s_dontneed(void);
int s_free_pageout(void);
int s_mprotect(void);
int s_fork(void);
int s_softdirty(void);
int s_exit(void);
int s_close(void);
int s_cache(void);
int s_skip_invalidate(void);
int s_fence_bug(const char *which);
int s_race(int iters, int bug);
int s_fence_timeout(void);
int s_genreuse(void);
int s_perf(int rounds);
int s_reset_hold(int wait_s);  /* reset.c */
int s_reset_peer(int wait_s);
#endif
