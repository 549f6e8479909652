/* The few kernel types patchgap.bpf.c touches, instead of a 3 MB vmlinux.h.
 *
 * Kernel structs are declared with preserve_access_index: the compiler then
 * records every field access as a CO-RE relocation, and the loader (aya, or
 * libbpf) rewrites the offset against the running kernel's BTF
 * (/sys/kernel/btf/vmlinux). Only the fields we read are declared, so their
 * offsets here do not matter; their NAMES and the struct names must match the
 * kernel's, and their types must be compatible. Checked against 6.18 with
 *   bpftool btf dump file /sys/kernel/btf/vmlinux format c
 *
 * User-space ABI structs (sockaddr_in, sockaddr_in6, open_how) are plain
 * structs with the full, fixed uapi layout: they are read from user memory,
 * not relocated. */
#ifndef PATCHGAP_VMLINUX_MIN_H
#define PATCHGAP_VMLINUX_MIN_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef short int __s16;
typedef short unsigned int __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long int __s64;
typedef long long unsigned int __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
typedef int pid_t;
typedef short unsigned int umode_t;

typedef struct {
	int counter;
} atomic_t;

/* uapi/linux/bpf.h: the values bpf_helpers.h users need. */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_LPM_TRIE = 11,
	BPF_MAP_TYPE_RINGBUF = 27,
};

/* Map flags: an LPM trie must be created without preallocation. */
enum {
	BPF_F_NO_PREALLOC = 1,
};

enum {
	BPF_ANY = 0,
};

/* bpf_ringbuf_submit flags and bpf_ringbuf_query flags (uapi linux/bpf.h). */
enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_RB_AVAIL_DATA = 0,
};

/* ---- Kernel structs (CO-RE relocated) ---- */

struct signal_struct {
	atomic_t live; /* threads of the group not yet in do_exit() */
} __attribute__((preserve_access_index));

struct super_block {
	__u32 s_dev; /* dev_t, the kernel's encoding: major << 20 | minor */
} __attribute__((preserve_access_index));

/* The change time has moved twice: i_ctime (a timespec64) until 6.5,
 * __i_ctime from 6.6, and i_ctime_sec/i_ctime_nsec from 6.11. The current
 * layout is the plain struct; the older two are flavours (the ___suffix is
 * dropped when matching the kernel's BTF), picked at load time with
 * bpf_core_field_exists. */
struct timespec64 {
	__s64 tv_sec;
	long int tv_nsec;
} __attribute__((preserve_access_index));

struct inode {
	umode_t i_mode;
	struct super_block *i_sb;
	long unsigned int i_ino;
	__s64 i_ctime_sec;
	__u32 i_ctime_nsec;
} __attribute__((preserve_access_index));

struct inode___v66 {
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));

struct inode___v50 {
	struct timespec64 i_ctime;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
	void *private_data; /* struct socket * for a socket file */
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct socket {
	short int type; /* SOCK_STREAM, SOCK_DGRAM, ... */
} __attribute__((preserve_access_index));

struct dentry {
	struct inode *d_inode;
} __attribute__((preserve_access_index));

struct path {
	struct dentry *dentry;
} __attribute__((preserve_access_index));

/* A task's root and working directory (chroot and pivot_root set root). */
struct fs_struct {
	struct path root;
} __attribute__((preserve_access_index));

/* The argv strings of the image, NUL-separated, in its user memory. */
struct mm_struct {
	long unsigned int arg_start;
	long unsigned int arg_end;
	struct file *exe_file; /* the image exec loaded (set before the exec event) */
} __attribute__((preserve_access_index));

struct task_struct {
	struct fs_struct *fs;
	int exit_code;
	pid_t pid;
	pid_t tgid;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct mm_struct *mm;
	struct files_struct *files;
	struct signal_struct *signal;
	__u64 start_boottime;
} __attribute__((preserve_access_index));

/* ---- Trace event contexts (CO-RE relocated) ---- */

/* The common header of every trace event record: 8 bytes. */
struct trace_entry {
	short unsigned int type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
} __attribute__((preserve_access_index));

/* raw_syscalls:sys_enter. The per-syscall events syscalls:sys_enter_<name>
 * have the same layout (struct syscall_trace_enter: an int nr padded to 8
 * bytes, then the arguments as unsigned longs from offset 16), which is why
 * this type serves as their context too. */
struct trace_event_raw_sys_enter {
	struct trace_entry ent;
	long int id;
	long unsigned int args[6];
	char __data[0];
} __attribute__((preserve_access_index));

/* raw_syscalls:sys_exit, and syscalls:sys_exit_<name> (ret at offset 16). */
struct trace_event_raw_sys_exit {
	struct trace_entry ent;
	long int id;
	long int ret;
	char __data[0];
} __attribute__((preserve_access_index));

struct trace_event_raw_sched_process_exec {
	struct trace_entry ent;
	__u32 __data_loc_filename; /* (length << 16) | offset from the record start */
	pid_t pid;
	pid_t old_pid;
	char __data[0];
} __attribute__((preserve_access_index));

/* Not read by the programs, declared for reference: sched_process_exit's
 * record changed across kernels. It used the class sched_process_template
 * (comm[16], pid, prio) for years; the 6.18 kernel here gives it its own
 * class with a group_dead flag, while its template now carries
 * __data_loc_comm. pg_exit takes everything from the current task instead,
 * so none of these layouts matters to it. */
struct trace_event_raw_sched_process_template {
	struct trace_entry ent;
	__u32 __data_loc_comm;
	pid_t pid;
	int prio;
	char __data[0];
} __attribute__((preserve_access_index));

struct trace_event_raw_sched_process_exit {
	struct trace_entry ent;
	char comm[16];
	pid_t pid;
	int prio;
	bool group_dead;
	char __data[0];
} __attribute__((preserve_access_index));

/* ---- User-space ABI (plain, fixed layout) ---- */

#define AF_INET 2
#define AF_INET6 10

struct in_addr {
	__be32 s_addr;
};

struct sockaddr_in {
	__u16 sin_family;
	__be16 sin_port;
	struct in_addr sin_addr;
	unsigned char __pad[8];
};

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be16 u6_addr16[8];
		__be32 u6_addr32[4];
	} in6_u;
};

struct sockaddr_in6 {
	__u16 sin6_family;
	__be16 sin6_port;
	__be32 sin6_flowinfo;
	struct in6_addr sin6_addr;
	__u32 sin6_scope_id;
};

/* openat2(2)'s argument (uapi/linux/openat2.h). */
struct open_how {
	__u64 flags;
	__u64 mode;
	__u64 resolve;
};

#define PROT_EXEC 0x4

/* ---- BPF program contexts (uapi/linux/bpf.h; the verifier rewrites every
 * access to them, so they are plain structs with the uapi layout) ---- */

/* cgroup_skb programs read the packet with bpf_skb_load_bytes only. */
struct __sk_buff;

/* cgroup/connect4|6 (and sendmsg, bind) programs' context. */
struct bpf_sock_addr {
	__u32 user_family;
	__u32 user_ip4;    /* network byte order */
	__u32 user_ip6[4]; /* network byte order */
	__u32 user_port;   /* network byte order */
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 msg_src_ip4;
	__u32 msg_src_ip6[4];
	__u64 sk; /* __bpf_md_ptr(struct bpf_sock *, sk) */
};

#define S_IFMT 00170000
#define S_IFSOCK 0140000

#endif
