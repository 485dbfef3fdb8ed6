//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* cgroup/connect6: send TCP connects to a target into the proxy, including
 * IPv4-mapped destinations (::ffff:a.b.c.d) on AF_INET6 sockets. */
#include "sluice.h"

SEC("cgroup/connect6")
int sluice_connect6(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return VERDICT_PASS;

	__u32 ip[4];
	ip[0] = *(volatile __u32 *)&ctx->user_ip6[0];
	ip[1] = *(volatile __u32 *)&ctx->user_ip6[1];
	ip[2] = *(volatile __u32 *)&ctx->user_ip6[2];
	ip[3] = *(volatile __u32 *)&ctx->user_ip6[3];
	__u16 port = bpf_ntohs(ctx->user_port);
	struct config *cfg = get_config();
	struct netcfg *nc = get_netcfg();
	if (nc && (nc->flags & NETCFG_SCOPED) && !job_task())
		return VERDICT_PASS;
	int foreign = foreign_netns(ctx, nc);

	int mapped = ip[0] == 0 && ip[1] == 0 && ip[2] == bpf_htonl(0xffff);
	int loopback = (ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] == bpf_htonl(1)) ||
		       (mapped && (bpf_ntohl(ip[3]) >> 24) == 127);
	/* The container address, as this socket would name it. */
	int at_addr = 0;
	if (nc) {
		if (mapped)
			at_addr = nc->addr4 != 0 && ip[3] == nc->addr4;
		else {
			__u32 a6[4];
			__builtin_memcpy(a6, nc->addr6, 16);
			at_addr = (a6[0] | a6[1] | a6[2] | a6[3]) != 0 && ip[0] == a6[0] &&
				  ip[1] == a6[1] && ip[2] == a6[2] && ip[3] == a6[3];
		}
	}

	if (cfg && cfg->enabled && port == cfg->proxy_port && ((!foreign && loopback) || at_addr)) {
		count(STAT_DENIED_PROXY_DIRECT);
		return VERDICT_DENY;
	}
	/* A container's loopback is its own (see connect4). */
	if (foreign && loopback)
		return VERDICT_PASS;

	__u8 addr[16];
	__builtin_memcpy(addr, ip, 16);
	struct target_val *t = lookup_target(addr, port);
	if (!t)
		return VERDICT_PASS;

	if (!cfg || !cfg->enabled) {
		count(STAT_DENIED_NO_CONFIG);
		return VERDICT_DENY;
	}
	__u32 to[4] = {};
	if (foreign) {
		if (!nc) {
			count(STAT_DENIED_NETNS);
			return VERDICT_DENY;
		}
		if (mapped) {
			to[2] = bpf_htonl(0xffff);
			to[3] = nc->addr4;
			if (to[3] == 0) {
				count(STAT_DENIED_NETNS);
				return VERDICT_DENY;
			}
		} else {
			__builtin_memcpy(to, nc->addr6, 16);
			if ((to[0] | to[1] | to[2] | to[3]) == 0) {
				count(STAT_DENIED_NETNS);
				return VERDICT_DENY;
			}
		}
	} else if (mapped) {
		/* Stay on IPv4: ::ffff:127.0.0.1 reaches the 127.0.0.1 listener. */
		to[2] = bpf_htonl(0xffff);
		to[3] = bpf_htonl(0x7f000001);
	} else {
		to[3] = bpf_htonl(1); /* ::1 */
	}
	if (!remember(ctx, addr, port, AF_INET6, t->id)) {
		count(STAT_DENIED_MAP_WRITE);
		return VERDICT_DENY;
	}
	keep_orig(ctx, addr, port);

	ctx->user_ip6[0] = to[0];
	ctx->user_ip6[1] = to[1];
	ctx->user_ip6[2] = to[2];
	ctx->user_ip6[3] = to[3];
	ctx->user_port = bpf_htons(cfg->proxy_port);
	if (foreign)
		count(STAT_REDIRECTED_NETNS);
	count(STAT_REDIRECTED);
	return VERDICT_PASS;
}

char __license[] SEC("license") = "Dual BSD/GPL";
