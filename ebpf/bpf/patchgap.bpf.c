// SPDX-License-Identifier: GPL-2.0
/* patchgap live sensing: exec (with argv), exit, IPv4/IPv6 connects, opens
 * of library-like files and executable mappings of those opens, and DNS
 * answers delivered to the host's sockets, as fixed-size records (events.h)
 * in one ring buffer.
 *
 * Built by ebpf/build.sh (clang -g -O2 -target bpf, then llvm-strip -g, which
 * keeps .BTF and .BTF.ext). CO-RE: every kernel struct read goes through
 * preserve_access_index types (vmlinux_min.h), relocated at load time against
 * /sys/kernel/btf/vmlinux. Loaded by aya =0.14.0: maps are BTF-defined in
 * SEC(".maps"), programs are found by their symbol names, and sections are
 * tracepoint/<category>/<name>.
 *
 * Needs: ring buffers and bpf_ktime_get_boot_ns (5.8), BTF (CONFIG_DEBUG_INFO_BTF),
 * CONFIG_FTRACE_SYSCALLS for the syscalls:* tracepoints. No kprobes, no
 * fentry (neither exists on the target kernel). */

#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "events.h"
#include "skb.h"

char LICENSE[] SEC("license") = "GPL";

/* ---- Load-time knobs (.rodata; aya: EbpfLoader::override_global) ---- */

/* Events of this thread group are dropped: the agent ignores its own
 * activity. 0 drops nothing. */
const volatile __u32 self_tgid = 0;
/* 1: pg_open_enter/pg_open2_enter record library-like opens; 0: they return
 * at once (the verifier removes the rest, since .rodata is frozen). */
const volatile __u32 enable_opens = 1;
/* 1: pg_connect_enter records connects; 0: it returns at once. */
const volatile __u32 enable_connects = 1;
/* Wake the agent only once this many bytes wait in the ring: a wakeup per
 * event would cost it a context switch per event. The agent also drains the
 * ring on a short timer, so a quiet trickle still arrives promptly. */
const volatile __u64 wakeup_bytes = 65536;
/* A connect of a process to a destination, with the result of the last one
 * sent, within this many ns of that record is counted in connect_seen, not
 * sent: a client opening a thousand connections a second to one service
 * costs the agent one record a second, which carries the count. 0 sends
 * every connect. */
const volatile __u64 connect_repeat_ns = 1000000000;

/* The event types and their kinds, named in the object's BTF so a reader of
 * the object (the Rust layout test) finds the one definition there. Never
 * read by the programs. */
const struct pg_event_header *const pg_btf_event_header __attribute__((unused)) = 0;
const struct pg_exec_event *const pg_btf_exec_event __attribute__((unused)) = 0;
const struct pg_exit_event *const pg_btf_exit_event __attribute__((unused)) = 0;
const struct pg_connect_event *const pg_btf_connect_event __attribute__((unused)) = 0;
const struct pg_open_event *const pg_btf_open_event __attribute__((unused)) = 0;
const struct pg_map_event *const pg_btf_map_event __attribute__((unused)) = 0;
const struct pg_dns_event *const pg_btf_dns_event __attribute__((unused)) = 0;
const enum pg_event_kind pg_btf_event_kind __attribute__((unused)) = PG_EVENT_EXEC;

/* ---- Maps ---- */

/* The only channel to user space. 16 MiB by default; the loader sets the
 * size it wants (a power of two, a multiple of the page size). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

/* Records dropped because the ring buffer was full, per CPU (key 0). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* Changes to any process's cgroup membership as /proc/PID/cgroup shows it
 * (key 0): a full scan that finds it unchanged since the last one reuses
 * what that scan read for a process it saw then (same pid, same start). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} cgroup_changes SEC(".maps");

/* connect(2) in flight: what sys_enter saw, until sys_exit gives the result. */
struct pg_connect_start {
	__u16 family;
	__u16 port; /* host byte order */
	__u16 sock_type;
	__u16 _pad0;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* tid */
	__type(value, struct pg_connect_start);
} connect_start SEC(".maps");

/* What a connect record is keyed by: the process (tgid and its start, so a
 * reused pid is another key), the destination and the result. */
struct pg_connect_key {
	__u32 tgid;
	__u16 family;
	__u16 port;
	__u64 start_ns;
	__u8 addr[16];
	__u16 sock_type;
	__u16 _pad0;
	__s32 ret;
};

/* When a key's last record was sent, and the repeats counted since. */
struct pg_connect_seen {
	__u64 sent_ns;
	__u64 repeats;
};

/* An LRU: a key evicted only costs one more record, never a lost connect.
 * Repeats counted after a key's last record are not reported when the process
 * never connects there again (at most connect_repeat_ns of them). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct pg_connect_key);
	__type(value, struct pg_connect_seen);
} connect_seen SEC(".maps");

/* openat(2)/openat2(2) of a library-like path in flight. Also the layout of
 * the per-CPU scratch buffer the path is first read into. */
struct pg_open_start {
	__u32 flags;
	__u32 path_len;
	__u32 lib_kind; /* PG_LIB_MODULE or PG_LIB_CODE */
	__u32 _pad0;
	char path[PG_PATH_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32); /* tid */
	__type(value, struct pg_open_start);
} open_start SEC(".maps");

/* Where every openat's path is read first: most fail the filter, and they
 * should cost no hash insert. (A 264-byte stack buffer would leave little of
 * the 512-byte stack.) Tracepoint programs do not nest on a CPU, so one
 * buffer per CPU is enough. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pg_open_start);
} open_scratch SEC(".maps");

/* Descriptors that a recorded open returned, by (tgid << 32 | fd), with the
 * struct file they named then: an executable mmap of the same descriptor
 * and file makes a map record (the library was loaded). An LRU, because
 * an open that is read and closed, never mapped, leaves its entry behind;
 * the file pointer check keeps a reused descriptor from matching. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} lib_fds SEC(".maps");

/* ---- Helpers ---- */

#define PG_PATH_MASK (PG_PATH_LEN - 1)
_Static_assert((PG_PATH_LEN & PG_PATH_MASK) == 0, "PG_PATH_LEN must be a power of two");

static __always_inline int pg_is_self(__u64 pid_tgid)
{
	return self_tgid != 0 && (__u32)(pid_tgid >> 32) == self_tgid;
}

static __always_inline void pg_count_lost(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&lost, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
}

/* Commit a record, waking the reader only when a batch has piled up
 * (bpf_ringbuf_query, since 5.8). */
static __always_inline void pg_submit(void *e)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	bpf_ringbuf_submit(e, avail >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* Reserve a record of `size` bytes, or count it as lost. */
static __always_inline void *pg_reserve(__u64 size)
{
	void *e = bpf_ringbuf_reserve(&events, size, 0);

	if (!e)
		pg_count_lost();
	return e;
}

static __always_inline void pg_fill_header(struct pg_event_header *h, __u32 kind,
					   __u64 pid_tgid)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	h->kind = kind;
	h->pid = pid_tgid >> 32;
	h->tid = (__u32)pid_tgid;
	h->ppid = BPF_CORE_READ(task, real_parent, tgid);
	h->ts_ns = bpf_ktime_get_boot_ns();
	h->cgroup_id = bpf_get_current_cgroup_id();
	h->uid = (__u32)bpf_get_current_uid_gid();
	h->_pad0 = 0;
	bpf_get_current_comm(h->comm, sizeof(h->comm));
	/* The process's start, not the thread's: the key is per process. */
	h->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
}

/* The struct file behind descriptor fd of the current task, or 0 when there
 * is none (fd out of range, closed, a failed read). Lock-free reads of the
 * fd table are what /proc does under RCU; a racing close() at worst yields
 * 0 or a stale pointer, which is only compared, never dereferenced here. */
static __always_inline struct file *pg_fd_file(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt;
	struct file **fds;
	struct file *file = 0;

	if (fd < 0)
		return 0;
	fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(fdt, fd);
	if (!fds || bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) != 0)
		return 0;
	return file;
}

/* The identity of `file` and of the current task's root (see struct
 * pg_file_id); zeros where unreadable. The change time is read from
 * whichever field this kernel has. */
static __always_inline void pg_file_identity(struct file *file, struct pg_file_id *id)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct inode *inode;

	__builtin_memset(id, 0, sizeof(*id));
	if (!file)
		return;
	inode = BPF_CORE_READ(task, fs, root.dentry, d_inode);
	if (inode) {
		id->root_ino = BPF_CORE_READ(inode, i_ino);
		id->root_dev = BPF_CORE_READ(inode, i_sb, s_dev);
	}
	inode = BPF_CORE_READ(file, f_inode);
	if (!inode)
		return;
	id->ino = BPF_CORE_READ(inode, i_ino);
	id->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	if (bpf_core_field_exists(inode->i_ctime_sec)) {
		id->ctime_sec = BPF_CORE_READ(inode, i_ctime_sec);
		/* Since 6.13 bit 31 is a flag (I_CTIME_QUERIED, multigrain
		 * timestamps), not time: nanoseconds need 30 bits. */
		id->ctime_nsec = BPF_CORE_READ(inode, i_ctime_nsec) & 0x3FFFFFFF;
	} else if (bpf_core_field_exists(((struct inode___v66 *)inode)->__i_ctime)) {
		struct inode___v66 *i = (void *)inode;

		id->ctime_sec = BPF_CORE_READ(i, __i_ctime.tv_sec);
		id->ctime_nsec = (__u32)BPF_CORE_READ(i, __i_ctime.tv_nsec);
	} else {
		struct inode___v50 *i = (void *)inode;

		id->ctime_sec = BPF_CORE_READ(i, i_ctime.tv_sec);
		id->ctime_nsec = (__u32)BPF_CORE_READ(i, i_ctime.tv_nsec);
	}
}

/* ---- Exec ---- */

#define PG_ARGS_MASK (PG_ARGS_LEN - 1)
_Static_assert((PG_ARGS_LEN & PG_ARGS_MASK) == 0, "PG_ARGS_LEN must be a power of two");

/* sched:sched_process_exec fires once per successful execve/execveat, in
 * exec_binprm() right after the binary handler has loaded the new image
 * (after de_thread(), so the caller is already the group leader and current
 * is the new program). Stable since 3.4; the record is (ent, __data_loc
 * filename, pid, old_pid) to this day. The filename is bprm->filename: the
 * path as passed to exec (possibly relative, or /dev/fd/N for fexecve), not
 * a resolved one. */
SEC("tracepoint/sched/sched_process_exec")
int pg_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 arg_start, arg_end, total;
	struct pg_exec_event *e;
	struct mm_struct *mm;
	__u32 loc, want;
	long n;

	if (pg_is_self(pid_tgid))
		return 0;
	e = pg_reserve(sizeof(*e));
	if (!e)
		return 0;
	/* Exec keeps the task (and its start time) of the process; after
	 * de_thread() current is the group leader. */
	pg_fill_header(&e->h, PG_EVENT_EXEC, pid_tgid);
	/* __data_loc: low 16 bits are the string's offset from the record start. */
	loc = ctx->__data_loc_filename;
	n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename),
				      (void *)ctx + (loc & 0xFFFF));
	e->filename_len = n > 0 ? n - 1 : 0;
	if (n <= 0)
		e->filename[0] = 0;
	/* argv: exec copied the strings onto the new stack moments ago
	 * (copy_strings), and current->mm is already the new image's, so the
	 * pages are resident and a non-sleepable read finds them. */
	mm = BPF_CORE_READ(task, mm);
	/* begin_new_exec() set the new mm's exe_file before this event. */
	pg_file_identity(BPF_CORE_READ(mm, exe_file), &e->exe);
	arg_start = BPF_CORE_READ(mm, arg_start);
	arg_end = BPF_CORE_READ(mm, arg_end);
	total = arg_end > arg_start ? arg_end - arg_start : 0;
	e->args_total = total > 0xFFFFFFFF ? 0xFFFFFFFF : (__u32)total;
	want = total > PG_ARGS_LEN ? PG_ARGS_LEN : (__u32)total;
	e->args_len = 0;
	/* The mask is a no-op for want < PG_ARGS_LEN and tells the verifier
	 * the size is bounded; PG_ARGS_LEN itself takes the other branch. */
	if (want == PG_ARGS_LEN) {
		if (bpf_probe_read_user(e->args, PG_ARGS_LEN, (const void *)arg_start) == 0)
			e->args_len = PG_ARGS_LEN;
	} else if (want > 0) {
		if (bpf_probe_read_user(e->args, want & PG_ARGS_MASK, (const void *)arg_start) == 0)
			e->args_len = want & PG_ARGS_MASK;
	}
	e->_pad0 = 0;
	pg_submit(e);
	return 0;
}

/* ---- Cgroup membership ---- */

/* Attached to each cgroup tracepoint after which a process's
 * /proc/PID/cgroup can read differently without the process being new:
 * cgroup_attach_task (a migration, on any hierarchy: a write to
 * cgroup.procs or tasks, a runtime or systemd moving a process),
 * cgroup_transfer_tasks (cgroup v1 cpuset emptied by hotplug),
 * cgroup_rename (a path changes), and cgroup_setup_root /
 * cgroup_destroy_root (a v1 hierarchy mounted or gone: a line more or
 * fewer for everyone). A fork inherits its parent's cgroups, and a clone
 * into a cgroup makes a new process: neither needs counting. The context is
 * not read, so the one program fits every record layout. */
SEC("tracepoint/cgroup/cgroup_attach_task")
int pg_cgroup_change(void *ctx)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&cgroup_changes, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}

/* ---- Exit ---- */

/* sched:sched_process_exit fires in do_exit() for every exiting thread, in
 * the context of that thread, after signal->live is decremented and
 * tsk->exit_code is set, and before exit_notify() wakes the parent. (Since
 * 6.16 it comes just before exit_mm() and carries group_dead; before that,
 * just after exit_mm().) Present since 2.6.28; as its record layout has
 * changed (see vmlinux_min.h), the context is not read at all.
 *
 * One event per process: when the last thread of the group exits
 * (signal->live, decremented at the top of do_exit(), has reached 0), not
 * when the thread with tid == tgid exits. The two differ when the leader
 * leaves early (pthread_exit in main: the process lives on) and when a
 * non-leader thread execs (de_thread() reaps the old leader: the process
 * lives on, with an exec event next). header.pid is the tgid; header.tid is
 * the last thread. exit_code is that task's exit_code, set just before the
 * tracepoint: (status << 8) | signal, the same for every thread after
 * exit_group(). */
SEC("tracepoint/sched/sched_process_exit")
int pg_exit(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pg_exit_event *e;
	int live = 1;

	if (pg_is_self(pid_tgid))
		return 0;
	if (BPF_CORE_READ_INTO(&live, task, signal, live.counter) != 0 || live != 0)
		return 0;
	e = pg_reserve(sizeof(*e));
	if (!e)
		return 0;
	pg_fill_header(&e->h, PG_EVENT_EXIT, pid_tgid);
	e->exit_code = BPF_CORE_READ(task, exit_code);
	e->_pad0 = 0;
	pg_submit(e);
	return 0;
}

/* ---- Connect ---- */

/* The socket type of fd in the current task: current->files->fdt->fd[fd] is
 * the struct file; for a socket (S_IFSOCK inode) its private_data is the
 * struct socket. 0 when anything is off (not a socket, fd out of range, a
 * failed read). Lock-free reads of the fd table are what /proc does under RCU;
 * a racing close() at worst yields 0 or a stale type. */
static __always_inline __u16 pg_sock_type(int fd)
{
	struct file *file = pg_fd_file(fd);
	struct socket *sock;
	umode_t mode;

	if (!file)
		return 0;
	mode = BPF_CORE_READ(file, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	if (!sock)
		return 0;
	return (__u16)BPF_CORE_READ(sock, type);
}

/* syscalls:sys_enter_connect fires at the entry of connect(2)
 * (__x64_sys_connect), in the caller's context, with the user pointers still
 * unread: the one place to see the destination of every connect, blocking or
 * not, TCP or UDP, before the kernel acts on it. The syscalls:* events exist
 * since 2.6.33 and BPF attaches to them since 4.7; the record is the syscall
 * number, then the six arguments as unsigned longs from offset 16. Calls
 * through io_uring (IORING_OP_CONNECT) do not pass here. Only AF_INET and
 * AF_INET6 are kept. */
SEC("tracepoint/syscalls/sys_enter_connect")
int pg_connect_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct pg_connect_start st = {};
	const void *uaddr;
	long addrlen;
	int fd;

	if (!enable_connects || pg_is_self(pid_tgid))
		return 0;
	fd = (int)ctx->args[0];
	uaddr = (const void *)ctx->args[1];
	addrlen = (long)ctx->args[2];
	if (!uaddr || bpf_probe_read_user(&st.family, sizeof(st.family), uaddr) != 0)
		return 0;
	if (st.family == AF_INET) {
		struct sockaddr_in sin;

		if (addrlen < (long)sizeof(sin) ||
		    bpf_probe_read_user(&sin, sizeof(sin), uaddr) != 0)
			return 0;
		st.port = bpf_ntohs(sin.sin_port);
		__builtin_memcpy(st.addr, &sin.sin_addr.s_addr, 4);
	} else if (st.family == AF_INET6) {
		struct sockaddr_in6 sin6;

		/* The kernel accepts 24 bytes (no sin6_scope_id): SIN6_LEN_RFC2133. */
		if (addrlen < 24 || bpf_probe_read_user(&sin6, 24, uaddr) != 0)
			return 0;
		st.port = bpf_ntohs(sin6.sin6_port);
		__builtin_memcpy(st.addr, sin6.sin6_addr.in6_u.u6_addr8, 16);
	} else {
		return 0;
	}
	st.sock_type = pg_sock_type(fd);
	bpf_map_update_elem(&connect_start, &tid, &st, BPF_ANY);
	return 0;
}

/* syscalls:sys_exit_connect fires when connect(2) returns, on the same thread:
 * the result (0, or -errno; -EINPROGRESS for a non-blocking TCP connect) joins
 * what sys_enter_connect kept for this tid. Same stability as above. */
SEC("tracepoint/syscalls/sys_exit_connect")
int pg_connect_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct pg_connect_start *st;
	struct pg_connect_event *e;

	struct pg_connect_key key = {};
	struct pg_connect_seen *seen;
	struct pg_connect_seen fresh = {};
	struct task_struct *task;
	__u64 repeats = 0;
	__u64 now;

	st = bpf_map_lookup_elem(&connect_start, &tid);
	if (!st)
		return 0;
	now = bpf_ktime_get_boot_ns();
	if (connect_repeat_ns) {
		task = (struct task_struct *)bpf_get_current_task();
		key.tgid = pid_tgid >> 32;
		key.family = st->family;
		key.port = st->port;
		key.start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
		__builtin_memcpy(key.addr, st->addr, sizeof(key.addr));
		key.sock_type = st->sock_type;
		key.ret = (__s32)ctx->ret;
		seen = bpf_map_lookup_elem(&connect_seen, &key);
		if (seen && now - seen->sent_ns < connect_repeat_ns) {
			__sync_fetch_and_add(&seen->repeats, 1);
			bpf_map_delete_elem(&connect_start, &tid);
			return 0;
		}
		/* Two CPUs racing here may each send a record, or lose a
		 * repeat to the reset: counts are exact but for such races. */
		if (seen) {
			repeats = seen->repeats;
			seen->repeats = 0;
			seen->sent_ns = now;
		} else {
			fresh.sent_ns = now;
			bpf_map_update_elem(&connect_seen, &key, &fresh, BPF_ANY);
		}
	}
	e = pg_reserve(sizeof(*e));
	if (e) {
		pg_fill_header(&e->h, PG_EVENT_CONNECT, pid_tgid);
		e->family = st->family;
		e->port = st->port;
		e->sock_type = st->sock_type;
		e->_pad0 = 0;
		e->ret = (__s32)ctx->ret;
		e->repeats = repeats > 0xffffffff ? 0xffffffff : (__u32)repeats;
		__builtin_memcpy(e->addr, st->addr, sizeof(e->addr));
		pg_submit(e);
	}
	bpf_map_delete_elem(&connect_start, &tid);
	return 0;
}

/* ---- Opens of library-like files ---- */

/* What pg_is_library() says of a path. Code is loaded by mapping it
 * executable (a mapping must follow the open for it to count); a module is
 * loaded by reading it. */
#define PG_LIB_MODULE 1
#define PG_LIB_CODE 2

/* Whether the path p[0..len) (NUL-terminated at p[len]) names a
 * library-like file, by its basename, and which kind: code when it ends in
 * ".so" or ".node" or contains ".so." and a digit (libfoo.so.3,
 * libbz2.so.1.0.4); a module when it ends in ".py", ".pyc" or ".jar" or is
 * "package.json"; else 0. The digit keeps out ld.so.cache (read by every
 * dynamically linked exec), ld.so.conf and ld.so.preload.
 *
 * Verifier-friendly: no string literals (they would land in a .rodata.str
 * section), every variable index masked into the buffer, and one bounded loop
 * whose only state besides its counter is a 0/1 flag. The loop stops at the
 * NUL rather than comparing with len: branching on len would split its range
 * on every iteration and blow the verifier's state budget. */
static __always_inline int pg_is_library(const char *p, __u32 len)
{
#define PG_AT(i) p[(i) & PG_PATH_MASK]
#define PG_ENDS2(a, b) (len >= 2 && PG_AT(len - 2) == (a) && PG_AT(len - 1) == (b))
#define PG_ENDS3(a, b, c) (len >= 3 && PG_AT(len - 3) == (a) && PG_ENDS2(b, c))
#define PG_ENDS4(a, b, c, d) (len >= 4 && PG_AT(len - 4) == (a) && PG_ENDS3(b, c, d))
#define PG_ENDS5(a, b, c, d, e) (len >= 5 && PG_AT(len - 5) == (a) && PG_ENDS4(b, c, d, e))
	int so_dot = 0; /* ".so.<digit>" seen since the last '/' */

	if (len == 0 || len >= PG_PATH_LEN)
		return 0;
	/* The suffixes hold no '/', so they are the basename's. */
	if (PG_ENDS3('.', 's', 'o') || PG_ENDS5('.', 'n', 'o', 'd', 'e'))
		return PG_LIB_CODE;
	if (PG_ENDS3('.', 'p', 'y') || PG_ENDS4('.', 'p', 'y', 'c') || PG_ENDS4('.', 'j', 'a', 'r'))
		return PG_LIB_MODULE;
	/* "package.json", the whole basename. */
	if (PG_ENDS5('.', 'j', 's', 'o', 'n') && len >= 12 && PG_AT(len - 12) == 'p' &&
	    PG_AT(len - 11) == 'a' && PG_AT(len - 10) == 'c' && PG_AT(len - 9) == 'k' &&
	    PG_AT(len - 8) == 'a' && PG_AT(len - 7) == 'g' && PG_AT(len - 6) == 'e' &&
	    (len == 12 || PG_AT(len - 13) == '/'))
		return PG_LIB_MODULE;
	/* ".so.<digit>" inside the basename. p[i + 1..i + 4] stay before the
	 * NUL whenever they match, since none of them is 0. */
	for (__u32 i = 0; i < PG_PATH_LEN - 4; i++) {
		char c = p[i];

		if (c == 0)
			break;
		if (c == '/')
			so_dot = 0;
		else if (c == '.' && p[i + 1] == 's' && p[i + 2] == 'o' && p[i + 3] == '.' &&
			 (unsigned char)(p[i + 4] - '0') <= 9)
			so_dot = 1;
	}
	return so_dot ? PG_LIB_CODE : 0;
#undef PG_ENDS5
#undef PG_ENDS4
#undef PG_ENDS3
#undef PG_ENDS2
#undef PG_AT
}

/* open(2)'s O_PATH (octal 010000000): the descriptor can neither be read
 * nor mapped, so such an open is never a load. It is how an agent (this one
 * or another patchgap agent on the host) stats a file inside a process's
 * root: two agents resolving each other's lookups would otherwise feed each
 * other events without end. */
#define PG_O_PATH 010000000

/* Read the user path, filter it, and keep it for the exit of this syscall. */
static __always_inline int pg_open_stash(__u32 tid, const char *upath, __u32 flags)
{
	__u32 zero = 0;
	struct pg_open_start *st;
	long n;

	if (!upath || (flags & PG_O_PATH))
		return 0;
	st = bpf_map_lookup_elem(&open_scratch, &zero);
	if (!st)
		return 0;
	/* Fails (n < 0) when the page holding the path is not resident: a
	 * non-sleepable program cannot fault it in. Such opens are missed. */
	n = bpf_probe_read_user_str(st->path, sizeof(st->path), upath);
	if (n <= 1)
		return 0;
	st->path_len = (__u32)(n - 1);
	st->lib_kind = pg_is_library(st->path, st->path_len);
	if (!st->lib_kind)
		return 0;
	st->flags = flags;
	bpf_map_update_elem(&open_start, &tid, st, BPF_ANY);
	return 0;
}

/* Emit the open kept for this tid when it succeeded; forget it either way. */
static __always_inline int pg_open_done(long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct pg_open_start *st;
	struct pg_open_event *e;

	st = bpf_map_lookup_elem(&open_start, &tid);
	if (!st)
		return 0;
	if (ret >= 0) {
		struct file *file = pg_fd_file((int)ret);

		e = pg_reserve(sizeof(*e));
		if (e) {
			pg_fill_header(&e->h, PG_EVENT_OPEN, pid_tgid);
			e->ret = (__s32)ret;
			e->flags = st->flags;
			e->path_len = st->path_len;
			e->_pad0 = 0;
			pg_file_identity(file, &e->file);
			__builtin_memcpy(e->path, st->path, sizeof(e->path));
			pg_submit(e);
		}
		/* Remember the descriptor's file, so an executable mapping of it
		 * can say the open was a load (pg_map_enter). Code only: modules
		 * are never mapped, and their entries would only churn the LRU. */
		if (st->lib_kind == PG_LIB_CODE && file) {
			__u64 key = (pid_tgid & 0xFFFFFFFF00000000ULL) | (__u32)ret;
			__u64 ptr = (__u64)file;

			bpf_map_update_elem(&lib_fds, &key, &ptr, BPF_ANY);
		}
	}
	bpf_map_delete_elem(&open_start, &tid);
	return 0;
}

/* syscalls:sys_enter_openat fires at the entry of openat(2), in the caller's
 * context, with the user path unread. On x86_64, glibc's open() and fopen()
 * are openat(AT_FDCWD, ...), and so is ld.so loading a shared library, so
 * this one event sees nearly every open; open(2) itself is left out. mmap of
 * an already open fd, io_uring opens and files inherited across exec do not
 * pass here. Stable like all syscalls:* events (2.6.33; BPF since 4.7).
 * Only paths that pass pg_is_library() are kept, so the hash map and the ring
 * buffer see a trickle, not every open on the host. */
SEC("tracepoint/syscalls/sys_enter_openat")
int pg_open_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	if (!enable_opens || pg_is_self(pid_tgid))
		return 0;
	return pg_open_stash((__u32)pid_tgid, (const char *)ctx->args[1], (__u32)ctx->args[2]);
}

/* syscalls:sys_exit_openat: the fd or -errno of the openat(2) above. */
SEC("tracepoint/syscalls/sys_exit_openat")
int pg_open_exit(struct trace_event_raw_sys_exit *ctx)
{
	return pg_open_done(ctx->ret);
}

/* syscalls:sys_enter_openat2: openat2(2) (5.6+) takes its flags in a user
 * struct open_how; otherwise as sys_enter_openat. Rarely used, but it is how
 * a careful program (or this agent's own RootFs) opens files. */
SEC("tracepoint/syscalls/sys_enter_openat2")
int pg_open2_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	const struct open_how *uhow;
	__u64 flags = 0;

	if (!enable_opens || pg_is_self(pid_tgid))
		return 0;
	uhow = (const struct open_how *)ctx->args[2];
	if (uhow)
		bpf_probe_read_user(&flags, sizeof(flags), &uhow->flags);
	return pg_open_stash((__u32)pid_tgid, (const char *)ctx->args[1], (__u32)flags);
}

/* syscalls:sys_exit_openat2: as sys_exit_openat. */
SEC("tracepoint/syscalls/sys_exit_openat2")
int pg_open2_exit(struct trace_event_raw_sys_exit *ctx)
{
	return pg_open_done(ctx->ret);
}

/* ---- Executable mappings of opened files ---- */

/* syscalls:sys_enter_mmap fires at the entry of mmap(2), in the caller's
 * context (args: addr, len, prot, flags, fd, off). The dynamic loader maps
 * each library's code segment with PROT_EXEC from the descriptor it opened,
 * so an executable mapping of a descriptor in lib_fds, still naming the file
 * the open returned, is the load of that library; a program that only reads
 * a library never does this. Anonymous and non-executable mappings (nearly
 * all of them) return after two compares. Emitted once per open: the entry
 * is deleted. */
SEC("tracepoint/syscalls/sys_enter_mmap")
int pg_map_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 prot = (__u32)ctx->args[2];
	int fd = (int)ctx->args[4];
	struct pg_map_event *e;
	struct file *now;
	__u64 key, *file;

	if (!enable_opens || !(prot & PROT_EXEC) || fd < 0 || pg_is_self(pid_tgid))
		return 0;
	key = (pid_tgid & 0xFFFFFFFF00000000ULL) | (__u32)fd;
	file = bpf_map_lookup_elem(&lib_fds, &key);
	if (!file)
		return 0;
	now = pg_fd_file(fd);
	if (*file != (__u64)now) {
		/* The descriptor was closed and reused for another file. */
		bpf_map_delete_elem(&lib_fds, &key);
		return 0;
	}
	bpf_map_delete_elem(&lib_fds, &key);
	e = pg_reserve(sizeof(*e));
	if (!e)
		return 0;
	pg_fill_header(&e->h, PG_EVENT_MAP, pid_tgid);
	e->fd = fd;
	e->prot = prot;
	pg_file_identity(now, &e->file);
	pg_submit(e);
	return 0;
}

/* ---- DNS answers ---- */

/* A cgroup_skb/ingress program runs for every packet delivered to an
 * AF_INET/AF_INET6 socket of a cgroup it is attached to or below
 * (sk_filter_trim_cap -> BPF_CGROUP_RUN_PROG_INET_INGRESS, since 4.10), in
 * the receiving path: softirq for a packet off the wire, the sender's
 * context for loopback. The agent attaches it once, to the root of the
 * cgroup v2 hierarchy (as a BPF link, which is always multi: other programs
 * there stay), so every socket on the host passes here, in every network
 * namespace. skb->data is the network header (the hook pushes it back), and
 * IP fragments are reassembled by then.
 *
 * Everything that is not a packet from source port 53 with a payload
 * returns after a few loads from the linear header (direct packet access,
 * no helper call): this runs for every packet the host receives. A DNS
 * answer costs one ring record of PG_DNS_LEN bytes plus the header.
 * bpf_skb_cgroup_id is the receiving socket's cgroup: the workload that
 * asked, wherever the answer came from (wire or a stub on loopback).
 *
 * Not followed: IPv6 extension headers (a DNS answer carries none in
 * practice), packets whose headers are not in the linear part (never for
 * UDP, whose header the stack pulled before delivery). Always returns 1:
 * the packet goes on, whatever this program does. */
SEC("cgroup_skb/ingress")
int pg_dns(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct pg_dns_event *e;
	__u32 l4, off, total, n;
	__u16 family;
	__u8 proto;
	__u8 *p;

	if (skb->protocol == bpf_htons(PG_ETH_P_IP)) {
		p = data;
		if ((void *)(p + 20) > data_end)
			return 1;
		l4 = (__u32)(p[0] & 0x0F) * 4;
		proto = p[9];
		family = AF_INET;
	} else if (skb->protocol == bpf_htons(PG_ETH_P_IPV6)) {
		p = data;
		if ((void *)(p + 40) > data_end)
			return 1;
		l4 = 40;
		proto = p[6];
		family = AF_INET6;
	} else {
		return 1;
	}
	if (proto != PG_IPPROTO_UDP && proto != PG_IPPROTO_TCP)
		return 1;
	if (l4 < 20 || l4 > 60)
		return 1;
	p = data + l4;
	/* 20 bytes: the whole TCP header without options, or the UDP header
	 * and 12 bytes of payload (a DNS header is 12 bytes). */
	if ((void *)(p + 20) > data_end)
		return 1;
	/* Source port 53, in network order. */
	if (p[0] != 0 || p[1] != 53)
		return 1;
	if (proto == PG_IPPROTO_UDP)
		off = l4 + 8;
	else
		off = l4 + (__u32)(p[12] >> 4) * 4;
	if (skb->len <= off)
		return 1; /* no payload: a bare TCP ACK or FIN */
	total = skb->len - off;

	e = pg_reserve(sizeof(*e));
	if (!e)
		return 1;
	__builtin_memset(&e->h, 0, sizeof(e->h));
	e->h.kind = PG_EVENT_DNS;
	e->h.ts_ns = bpf_ktime_get_boot_ns();
	e->h.cgroup_id = bpf_skb_cgroup_id(skb);
	e->h.uid = bpf_get_socket_uid(skb);
	e->family = family;
	e->proto = proto;
	e->payload_total = total;
	e->_pad0 = 0;
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	if (family == AF_INET)
		__builtin_memcpy(e->saddr, data + 12, 4);
	else
		__builtin_memcpy(e->saddr, data + 8, 16);
	/* Copy at most PG_DNS_LEN bytes, wherever they lie (linear or paged
	 * data): the helper needs a length the verifier can bound, > 0. */
	n = total < PG_DNS_LEN ? total : PG_DNS_LEN;
	e->payload_len = 0;
	if (n == PG_DNS_LEN) {
		if (bpf_skb_load_bytes(skb, off, e->payload, PG_DNS_LEN) == 0)
			e->payload_len = PG_DNS_LEN;
	} else if (n > 0) {
		n &= PG_DNS_LEN - 1;
		if (n > 0 && bpf_skb_load_bytes(skb, off, e->payload, n) == 0)
			e->payload_len = n;
	}
	pg_submit(e);
	return 1;
}
