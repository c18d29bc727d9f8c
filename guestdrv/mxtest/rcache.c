// SPDX-License-Identifier: GPL-2.0
/*
 * rcache.c - a VA-keyed registration cache as MPI stacks keep them
 * (Open-MX's OMX_RCACHE, UCX's rcache; zero-copy-design.md 2.4, 4.2): a
 * hit is any cached registration covering [va, va+len) with the access
 * asked. With use_gen_map, a hit is validated with one load of the
 * driver's generation map (kdreg2-style): an entry the notifier revoked
 * is dropped (and its slot freed with DEREG) and registered anew. Without
 * it the cache trusts the VA, which is the classic stale-registration bug
 * of scenario 15.
 */
#include <errno.h>
#include <stdlib.h>
#include "mx.h"

#define RCACHE_SLOTS 64

struct rentry {
	int used;
	uintptr_t va;
	size_t len;
	uint32_t access, id, gen;
};

struct rcache {
	struct ep *e;
	int use_gen_map;
	uint64_t stale_dropped;
	struct rentry ent[RCACHE_SLOTS];
};

struct rcache *rcache_new(struct ep *e, int use_gen_map)
{
	struct rcache *c = calloc(1, sizeof(*c));
	if (c) {
		c->e = e;
		c->use_gen_map = use_gen_map;
	}
	return c;
}

int rcache_get(struct rcache *c, void *va, size_t len, uint32_t access, uint32_t *id, uint32_t *gen, int *hit)
{
	uintptr_t a = (uintptr_t)va;
	struct rentry *freeslot = NULL;
	*hit = 0;
	for (int i = 0; i < RCACHE_SLOTS; i++) {
		struct rentry *r = &c->ent[i];
		if (!r->used) {
			if (!freeslot)
				freeslot = r;
			continue;
		}
		if (a < r->va || a + len > r->va + r->len || (r->access & access) != access)
			continue;
		if (c->use_gen_map && mx_gen_valid(c->e, r->id, r->gen) != 1) {
			/* Revoked under us: free the driver's slot, forget it. */
			mx_dereg(c->e, r->id, r->gen);
			r->used = 0;
			c->stale_dropped++;
			if (!freeslot)
				freeslot = r;
			continue;
		}
		*id = r->id;
		*gen = r->gen;
		*hit = 1;
		return 0;
	}
	if (!freeslot)
		return -ENOSPC;
	struct myrimx_reg reg;
	int rc = mx_reg(c->e, va, len, access, 0, &reg);
	if (rc)
		return rc;
	*freeslot = (struct rentry){.used = 1, .va = a, .len = len, .access = access, .id = reg.id, .gen = reg.generation};
	*id = reg.id;
	*gen = reg.generation;
	return 0;
}

uint64_t rcache_stale_dropped(struct rcache *c) { return c->stale_dropped; }

void rcache_free(struct rcache *c)
{
	for (int i = 0; i < RCACHE_SLOTS; i++)
		if (c->ent[i].used)
			mx_dereg(c->e, c->ent[i].id, c->ent[i].gen);
	free(c);
}
