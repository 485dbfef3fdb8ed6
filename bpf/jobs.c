//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Job marks and tamper events.
 *
 * A job's tasks carry a mark in task storage (sluice.h: job_task): set when
 * a task of a job cgroup forks or execs (under a scope also when it
 * connects), inherited by every child at fork, and kept wherever a task
 * moves, so the connect programs (attached
 * at a scope above the job cgroups) still know a job task that left its
 * cgroup, through a double fork, setsid or unshare as well.
 *
 * What a marked task does against Sluice is reported as a tamper event in a
 * pinned ring buffer, which outlives the daemon: the next daemon reads what
 * was written while none ran (a job that killed sluiced is reported once it
 * is back). The events: moving a task to another cgroup, signalling or
 * ptracing a protected process (sluiced), calling bpf(), loading a kernel
 * module, deleting a file under /sys/fs/bpf. These programs only observe:
 * this kernel refuses the BPF LSM programs that could deny (see README,
 * Threat model). */
#include "sluice.h"

struct cgroup;

/* Tamper kinds, as the daemon names them. */
enum tamper_kind {
	TAMPER_CGROUP_MOVE = 1, /* a marked task was attached to another cgroup */
	TAMPER_SIGNAL,          /* a marked task signalled a protected process */
	TAMPER_PTRACE,          /* a marked task called ptrace on a protected process */
	TAMPER_BPF,             /* a marked task called bpf() */
	TAMPER_MODULE,          /* a marked task loaded or removed a kernel module */
	TAMPER_PIN,             /* a marked task unlinked or renamed a path under /sys/fs/bpf */
};

struct tamper_event {
	__u64 time_ns;    /* bpf_ktime_get_boot_ns */
	__u64 job_cgroup; /* the actor's mark */
	__u64 arg;        /* destination cgroup id, signal, bpf command, syscall */
	__u32 kind;
	__u32 pid;        /* the actor: thread group id */
	__u32 tid;
	__u32 target;     /* the moved task, or the protected process */
	__u32 ppid;       /* the actor's parent (thread group id) */
	__u32 pad;
	char comm[16];
	char path[64];    /* cgroup path, or the unlinked path */
};

/* For bpf2go: the event type is in the object's BTF. */
const struct tamper_event *unused_tamper_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_tamper SEC(".maps");

/* Protected processes (sluiced) by thread group id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_protect SEC(".maps");

/* Watched system calls of this architecture: syscall number -> enum
 * tamper_kind (TAMPER_PTRACE, TAMPER_BPF, TAMPER_MODULE, TAMPER_PIN), with
 * which argument holds the path for TAMPER_PIN in the upper bits. Written by
 * the daemon, which knows the numbers. */
#define MAX_SYSCALL 512
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SYSCALL);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sluice_syscalls SEC(".maps");

#define SYSCALL_PATH_ARG(v) ((v) >> 8)

struct pt_regs {
	unsigned long di;
	unsigned long si;
	unsigned long dx;
} __pai;

static __always_inline struct job_mark *mark_of(struct task_struct *t)
{
	return bpf_task_storage_get(&sluice_marks, t, 0, 0);
}

static __always_inline struct tamper_event *reserve(__u32 kind, struct job_mark *m)
{
	struct tamper_event *e = bpf_ringbuf_reserve(&sluice_tamper, sizeof(*e), 0);
	if (!e)
		return 0;
	__u64 pt = bpf_get_current_pid_tgid();
	e->time_ns = bpf_ktime_get_boot_ns();
	e->job_cgroup = m->job_cgroup;
	e->arg = 0;
	e->kind = kind;
	e->pid = pt >> 32;
	e->tid = (__u32)pt;
	e->target = 0;
	e->ppid = bpf_get_current_task_btf()->real_parent->tgid;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->path[0] = 0;
	return e;
}

/* fork: a marked parent's child is marked; so is a child forked by a task
 * of a job cgroup (the parent is the current task). */
SEC("tp_btf/sched_process_fork")
int sluice_fork(__u64 *ctx)
{
	struct task_struct *parent = (void *)ctx[0];
	struct task_struct *child = (void *)ctx[1];
	__u64 cg;
	struct job_mark *pm = mark_of(parent);
	if (pm)
		cg = pm->job_cgroup;
	else if (!(cg = current_job_cgroup()))
		return 0;
	struct job_mark *cm = bpf_task_storage_get(&sluice_marks, child, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (cm)
		cm->job_cgroup = cg;
	return 0;
}

/* exec: a task of a job cgroup is marked (one started straight into the
 * cgroup, clone3 with CLONE_INTO_CGROUP, is marked here). */
SEC("tp_btf/sched_process_exec")
int sluice_exec(__u64 *ctx)
{
	job_task();
	return 0;
}

/* cgroup_attach_task(dst_cgrp, path, task, threadgroup): a marked task was
 * moved (by itself or another). The daemon compares the path with the job
 * cgroups: moves within them are not tampering. */
SEC("tp_btf/cgroup_attach_task")
int sluice_cgroup_attach(__u64 *ctx)
{
	const char *path = (void *)ctx[1];
	struct task_struct *task = (void *)ctx[2];
	struct job_mark *m = mark_of(task);
	if (!m)
		return 0;
	struct tamper_event *e = reserve(TAMPER_CGROUP_MOVE, m);
	if (!e)
		return 0;
	e->target = task->tgid;
	bpf_probe_read_kernel_str(e->path, sizeof(e->path), path);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* signal_generate(sig, info, task, group, result): a marked task sent a
 * signal to a protected process. */
SEC("tp_btf/signal_generate")
int sluice_signal(__u64 *ctx)
{
	int sig = (int)ctx[0];
	struct task_struct *task = (void *)ctx[2];
	__u32 tgid = task->tgid;
	if (!bpf_map_lookup_elem(&sluice_protect, &tgid))
		return 0;
	struct job_mark *m = mark_of(bpf_get_current_task_btf());
	if (!m)
		return 0;
	struct tamper_event *e = reserve(TAMPER_SIGNAL, m);
	if (!e)
		return 0;
	e->target = tgid;
	e->arg = sig;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* sys_enter(regs, id): the watched system calls of a marked task. */
SEC("tp_btf/sys_enter")
int sluice_sys_enter(__u64 *ctx)
{
	long id = (long)ctx[1];
	if (id < 0 || id >= MAX_SYSCALL)
		return 0;
	__u32 key = id;
	__u32 *w = bpf_map_lookup_elem(&sluice_syscalls, &key);
	if (!w || *w == 0)
		return 0;
	struct job_mark *m = mark_of(bpf_get_current_task_btf());
	if (!m)
		return 0;
	struct pt_regs *regs = (void *)ctx[0];
	__u32 kind = *w & 0xff;
	unsigned long a0 = regs->di, a1 = regs->si;
	if (kind == TAMPER_PTRACE) {
		__u32 pid = a1;
		if (!bpf_map_lookup_elem(&sluice_protect, &pid))
			return 0;
	}
	char path[64];
	if (kind == TAMPER_PIN) {
		const char *up = (const char *)(SYSCALL_PATH_ARG(*w) == 1 ? a1 : a0);
		if (bpf_probe_read_user_str(path, sizeof(path), up) < 12)
			return 0;
		/* Only absolute paths under bpffs; see the daemon's pin check
		 * for the rest. */
		if (path[0] != '/' || path[1] != 's' || path[2] != 'y' || path[3] != 's' || path[4] != '/' ||
		    path[5] != 'f' || path[6] != 's' || path[7] != '/' || path[8] != 'b' || path[9] != 'p' ||
		    path[10] != 'f')
			return 0;
	}
	struct tamper_event *e = reserve(kind, m);
	if (!e)
		return 0;
	e->arg = id;
	if (kind == TAMPER_PTRACE)
		e->target = a1;
	if (kind == TAMPER_BPF)
		e->target = a0; /* the bpf command */
	if (kind == TAMPER_PIN)
		__builtin_memcpy(e->path, path, sizeof(path));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char __license[] SEC("license") = "Dual BSD/GPL";
