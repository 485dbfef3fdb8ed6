//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* sockops: once a redirected socket has its local address and port (at
 * TCP_CONNECT, before the SYN leaves), move its origin from the cookie map
 * to the map keyed by that address, which is what the proxy sees as the
 * accepted peer. */
#include "sluice.h"

SEC("sockops")
int sluice_sockops(struct bpf_sock_ops *skops)
{
	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;

	__u64 cookie = bpf_get_socket_cookie(skops);
	struct origin *o = bpf_map_lookup_elem(&sluice_by_cookie, &cookie);
	if (!o)
		return 1;

	struct peer_key k = {};
	if (skops->family == AF_INET) {
		__u32 ip4 = skops->local_ip4;
		k.addr[10] = 0xff;
		k.addr[11] = 0xff;
		__builtin_memcpy(&k.addr[12], &ip4, 4);
	} else {
		__u32 ip[4];
		ip[0] = *(volatile __u32 *)&skops->local_ip6[0];
		ip[1] = *(volatile __u32 *)&skops->local_ip6[1];
		ip[2] = *(volatile __u32 *)&skops->local_ip6[2];
		ip[3] = *(volatile __u32 *)&skops->local_ip6[3];
		__builtin_memcpy(k.addr, ip, 16);
	}
	k.port = (__u16)skops->local_port; /* host order */

	/* A failed write leaves no entry: the proxy then closes the
	 * connection rather than relay it without an origin. */
	if (bpf_map_update_elem(&sluice_by_peer, &k, o, BPF_ANY) == 0)
		count(STAT_HANDED_OVER);
	else
		count(STAT_HANDOVER_FAILED);
	bpf_map_delete_elem(&sluice_by_cookie, &cookie);
	return 1;
}

char __license[] SEC("license") = "Dual BSD/GPL";
