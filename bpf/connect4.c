//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* cgroup/connect4: send TCP connects to a target into the proxy. */
#include "sluice.h"

SEC("cgroup/connect4")
int sluice_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return VERDICT_PASS;

	__u32 dst = ctx->user_ip4; /* network order */
	__u16 port = bpf_ntohs(ctx->user_port);
	struct config *cfg = get_config();
	struct netcfg *nc = get_netcfg();
	/* Attached at a scope, the program acts for job tasks only. */
	if (nc && (nc->flags & NETCFG_SCOPED) && !job_task())
		return VERDICT_PASS;
	int foreign = foreign_netns(ctx, nc);
	int loopback = (bpf_ntohl(dst) >> 24) == 127;

	/* A job must not reach the proxy listener directly: it would arrive
	 * with no origin and bypass nothing, but refusing it keeps the
	 * listener's only clients the redirected ones. In another network
	 * namespace the listener is the container address. */
	if (cfg && cfg->enabled && port == cfg->proxy_port &&
	    ((!foreign && loopback) || (nc && nc->addr4 != 0 && dst == nc->addr4))) {
		count(STAT_DENIED_PROXY_DIRECT);
		return VERDICT_DENY;
	}
	/* A container's loopback is its own: the host's servers on 127.0.0.x
	 * cannot be reached from there, so such a connect is not a target's. */
	if (foreign && loopback)
		return VERDICT_PASS;

	__u8 addr[16] = {};
	addr[10] = 0xff;
	addr[11] = 0xff;
	__builtin_memcpy(&addr[12], &dst, 4);

	struct target_val *t = lookup_target(addr, port);
	if (!t)
		return VERDICT_PASS;

	/* Fail closed: a target with no proxy to take it is unreachable. */
	if (!cfg || !cfg->enabled) {
		count(STAT_DENIED_NO_CONFIG);
		return VERDICT_DENY;
	}
	if (foreign && (!nc || nc->addr4 == 0)) {
		count(STAT_DENIED_NETNS);
		return VERDICT_DENY;
	}
	if (!remember(ctx, addr, port, AF_INET, t->id)) {
		count(STAT_DENIED_MAP_WRITE);
		return VERDICT_DENY;
	}
	keep_orig(ctx, addr, port);

	if (foreign) {
		ctx->user_ip4 = nc->addr4;
		count(STAT_REDIRECTED_NETNS);
	} else {
		ctx->user_ip4 = bpf_htonl(0x7f000001); /* 127.0.0.1 */
	}
	ctx->user_port = bpf_htons(cfg->proxy_port);
	count(STAT_REDIRECTED);
	return VERDICT_PASS;
}

char __license[] SEC("license") = "Dual BSD/GPL";
