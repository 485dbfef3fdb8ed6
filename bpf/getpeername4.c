//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* cgroup/getpeername4: a redirected socket reports its original
 * destination as its peer, not the proxy. Clients that reconnect to their
 * peer address (a PostgreSQL cancel request, for one) then go where they
 * meant to, and are intercepted again. */
#include "sluice.h"

SEC("cgroup/getpeername4")
int sluice_getpeername4(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct orig_dst *od = bpf_sk_storage_get(&sluice_sk_orig, sk, 0, 0);
	if (!od)
		return 1;
	__u32 ip4;
	__builtin_memcpy(&ip4, &od->addr[12], 4);
	ctx->user_ip4 = ip4;
	ctx->user_port = bpf_htons(od->port);
	return 1;
}

char __license[] SEC("license") = "Dual BSD/GPL";
