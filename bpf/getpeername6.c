//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* cgroup/getpeername6: the AF_INET6 counterpart of getpeername4, for IPv6
 * and IPv4-mapped destinations. */
#include "sluice.h"

SEC("cgroup/getpeername6")
int sluice_getpeername6(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct orig_dst *od = bpf_sk_storage_get(&sluice_sk_orig, sk, 0, 0);
	if (!od)
		return 1;
	__u32 ip[4];
	__builtin_memcpy(ip, od->addr, 16);
	ctx->user_ip6[0] = ip[0];
	ctx->user_ip6[1] = ip[1];
	ctx->user_ip6[2] = ip[2];
	ctx->user_ip6[3] = ip[3];
	ctx->user_port = bpf_htons(od->port);
	return 1;
}

char __license[] SEC("license") = "Dual BSD/GPL";
