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

	int mapped = ip[0] == 0 && ip[1] == 0 && ip[2] == bpf_htonl(0xffff);
	int loopback = (ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] == bpf_htonl(1)) ||
		       (mapped && (bpf_ntohl(ip[3]) >> 24) == 127);

	if (cfg && cfg->enabled && port == cfg->proxy_port && loopback) {
		count(STAT_DENIED_PROXY_DIRECT);
		return VERDICT_DENY;
	}

	__u8 addr[16];
	__builtin_memcpy(addr, ip, 16);
	struct target_val *t = lookup_target(addr, port);
	if (!t)
		return VERDICT_PASS;

	if (!cfg || !cfg->enabled) {
		count(STAT_DENIED_NO_CONFIG);
		return VERDICT_DENY;
	}
	if (!remember(ctx, addr, port, AF_INET6, t->id)) {
		count(STAT_DENIED_MAP_WRITE);
		return VERDICT_DENY;
	}
	keep_orig(ctx, addr, port);

	if (mapped) {
		/* Stay on IPv4: ::ffff:127.0.0.1 reaches the 127.0.0.1 listener. */
		ctx->user_ip6[3] = bpf_htonl(0x7f000001);
	} else {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = 0;
		ctx->user_ip6[3] = bpf_htonl(1); /* ::1 */
	}
	ctx->user_port = bpf_htons(cfg->proxy_port);
	count(STAT_REDIRECTED);
	return VERDICT_PASS;
}

char __license[] SEC("license") = "Dual BSD/GPL";
