/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Maps and types shared by Sluice's cgroup programs. Every map is pinned by
 * name under the directory the loader passes as PinPath, so the connect and
 * sockops objects share one instance and a restarted daemon re-adopts them. */
#ifndef __SLUICE_H
#define __SLUICE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1

/* Return values of cgroup sock_addr programs. */
#define VERDICT_DENY 0 /* connect() fails with EPERM */
#define VERDICT_PASS 1

/* A target map key: the destination port (host order) and the destination
 * address as IPv6, IPv4 as ::ffff:a.b.c.d. prefixlen counts the 32 bits of
 * port and pad, which are always matched in full, plus the address bits. A
 * port of 0 stands for "any port". */
struct target_key {
	__u32 prefixlen;
	__u16 port;
	__u16 pad;
	__u8 addr[16];
};

struct target_val {
	__u32 id; /* target id assigned by the daemon */
	__u32 flags;
};

/* Runtime settings written by the daemon. enabled == 0 means "not
 * configured": connects to a target are then denied, never passed. */
struct config {
	__u32 enabled;
	__u16 proxy_port; /* host order */
	__u16 pad;
	__u32 mark; /* SO_MARK of the daemon's own sockets */
	__u32 pad2;
};

/* Where a redirected connection was going and who opened it. */
struct origin {
	__u8 addr[16];   /* original destination, IPv4 as ::ffff:a.b.c.d */
	__u16 port;      /* original destination port, host order */
	__u16 family;    /* socket family: AF_INET or AF_INET6 */
	__u32 target_id;
	__u32 pid;       /* thread id */
	__u32 tgid;      /* process id */
	__u32 uid;
	__u32 gid;
	__u64 cgroup_id;
	__u64 cookie;    /* socket cookie */
	char comm[16];
};

/* The client end of a redirected connection, as the proxy sees its peer. */
struct peer_key {
	__u8 addr[16]; /* IPv4 as ::ffff:a.b.c.d */
	__u16 port;    /* host order */
	__u16 pad;
	__u32 pad2;
};

/* The original destination of a redirected socket, kept in the socket's own
 * storage for its whole life so getpeername can report it. */
struct orig_dst {
	__u8 addr[16]; /* IPv4 as ::ffff:a.b.c.d */
	__u16 port;    /* host order */
	__u16 pad;
};

enum stat {
	STAT_REDIRECTED = 0,
	STAT_DENIED_NO_CONFIG,
	STAT_DENIED_MAP_WRITE,
	STAT_DENIED_PROXY_DIRECT,
	STAT_HANDED_OVER, /* sockops moved an origin to the peer map */
	STAT_HANDOVER_FAILED,
	STAT_DENIED_NETNS, /* a target connect from another network namespace, and no address there reaches the proxy */
	STAT_REDIRECTED_NETNS, /* redirected from another network namespace to the container address */
	STAT_MAX,
};

/* The stats map has room for counters added later: a pinned map whose size
 * changed could not be re-adopted by a newer daemon. */
#define STATS_ROOM 32

/* Where connects made in other network namespaces (containers) go. The
 * proxy listens on 127.0.0.1 and ::1 of the daemon's own network
 * namespace, host_netns; in any other namespace those are that namespace's
 * own loopback, so the redirect goes to addr4 / addr6 instead: addresses
 * on the host's loopback device that the daemon has checked are local, so
 * a container reaches them through its default route. A field left 0
 * means "none": a target connect that would need it is refused. The map is
 * separate from sluice_config so that pins of older versions stay
 * compatible. */
struct netcfg {
	__u64 host_netns; /* netns cookie of the daemon's namespace; 0: not known */
	__u32 addr4;      /* network order; 0: none */
	__u32 flags;      /* NETCFG_* */
	__u8 addr6[16];   /* all zero: none */
};

/* NETCFG_SCOPED: the connect programs are attached to a scope cgroup that
 * holds the job cgroups and the places a job may move to; they act only for
 * job tasks (marked, or in a job cgroup) and leave every other task's
 * connects alone. */
#define NETCFG_SCOPED 1

/* Kernel types the job programs read, relocated against the running
 * kernel's BTF at load (CO-RE); only the fields used are declared. */
#define __pai __attribute__((preserve_access_index))
struct task_struct {
	int pid;
	int tgid;
	struct task_struct *real_parent;
} __pai;

/* A job task's mark, in its task storage: set when a task of a job cgroup
 * forks or execs (under a scope also when it connects), and by the daemon
 * for the tasks already there; inherited by every child, and kept wherever
 * the task moves. */
struct job_mark {
	__u64 job_cgroup; /* the job cgroup the mark came from */
	__u32 flags;
	__u32 pad;
};

/* The deepest cgroup level at which a job cgroup is looked for. */
#define MAX_CGROUP_LEVEL 16

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct target_key);
	__type(value, struct target_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct origin);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_by_cookie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct peer_key);
	__type(value, struct origin);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_by_peer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STATS_ROOM);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct netcfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_netcfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct job_mark);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_marks SEC(".maps");

/* The job cgroups (runner and container cgroups) by cgroup id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_jobcg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct orig_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_sk_orig SEC(".maps");

static __always_inline void count(__u32 s)
{
	__u64 *v = bpf_map_lookup_elem(&sluice_stats, &s);
	if (v)
		*v += 1;
}

static __always_inline struct config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&sluice_config, &zero);
}

static __always_inline struct netcfg *get_netcfg(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&sluice_netcfg, &zero);
}

/* foreign_netns reports whether the connect is made in a network namespace
 * other than the daemon's. Unknown (no cookie written) counts as the
 * daemon's, which is how versions without containers behaved. */
static __always_inline int foreign_netns(void *ctx, struct netcfg *nc)
{
	if (!nc || nc->host_netns == 0)
		return 0;
	return bpf_get_netns_cookie(ctx) != nc->host_netns;
}

/* current_job_cgroup returns the job cgroup the current task is in (at any
 * depth below it), or 0. */
static __always_inline __u64 current_job_cgroup(void)
{
	for (int level = 1; level < MAX_CGROUP_LEVEL; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);
		if (id == 0)
			return 0;
		if (bpf_map_lookup_elem(&sluice_jobcg, &id))
			return id;
	}
	return 0;
}

/* job_task reports whether the current task belongs to a job: it carries a
 * mark, or it is in a job cgroup, and then gets one. */
static __always_inline int job_task(void)
{
	struct task_struct *t = bpf_get_current_task_btf();
	if (bpf_task_storage_get(&sluice_marks, t, 0, 0))
		return 1;
	__u64 cg = current_job_cgroup();
	if (!cg)
		return 0;
	struct job_mark *m = bpf_task_storage_get(&sluice_marks, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (m)
		m->job_cgroup = cg;
	return 1;
}

/* lookup_target finds the target for a destination: exact port first, then
 * the any-port entries. */
static __always_inline struct target_val *lookup_target(const __u8 addr[16], __u16 port)
{
	struct target_key k = {};
	k.prefixlen = 32 + 128;
	k.port = port;
	__builtin_memcpy(k.addr, addr, 16);
	struct target_val *v = bpf_map_lookup_elem(&sluice_targets, &k);
	if (v)
		return v;
	k.port = 0;
	return bpf_map_lookup_elem(&sluice_targets, &k);
}

/* remember records the origin of a connect under the socket's cookie. It
 * returns 0 when the entry could not be written. */
static __always_inline int remember(void *ctx, const __u8 addr[16], __u16 port, __u16 family,
				    __u32 target_id)
{
	struct origin o = {};
	__builtin_memcpy(o.addr, addr, 16);
	o.port = port;
	o.family = family;
	o.target_id = target_id;
	__u64 pt = bpf_get_current_pid_tgid();
	o.pid = (__u32)pt;
	o.tgid = pt >> 32;
	__u64 ug = bpf_get_current_uid_gid();
	o.uid = (__u32)ug;
	o.gid = ug >> 32;
	o.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(o.comm, sizeof(o.comm));
	o.cookie = bpf_get_socket_cookie(ctx);
	return bpf_map_update_elem(&sluice_by_cookie, &o.cookie, &o, BPF_ANY) == 0;
}

/* keep_orig stores the original destination in the socket's storage, for
 * getpeername. Failing to store it only costs that transparency. */
static __always_inline void keep_orig(struct bpf_sock_addr *ctx, const __u8 addr[16], __u16 port)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return;
	struct orig_dst *od = bpf_sk_storage_get(&sluice_sk_orig, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!od)
		return;
	__builtin_memcpy(od->addr, addr, 16);
	od->port = port;
}

#endif
