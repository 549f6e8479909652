/* patchgap kernel events: the ONE definition shared by the BPF programs and
 * (through the Rust mirrors in ebpf/src/lib.rs, checked by a layout test)
 * the agent. Fixed-width fields only, naturally aligned, no implicit
 * padding: every pad is spelled out. */
#ifndef PATCHGAP_EVENTS_H
#define PATCHGAP_EVENTS_H

#define PG_COMM_LEN 16
#define PG_PATH_LEN 256
/* Bytes of argv an exec record carries: the command line as
 * /proc/PID/cmdline gives it (NUL-separated), cut at this bound. */
#define PG_ARGS_LEN 1024
/* Bytes of a DNS message a DNS record carries: the classic UDP limit
 * (RFC 1035); a longer answer (EDNS0, TCP) is cut, and payload_total says
 * by how much. */
#define PG_DNS_LEN 512

enum pg_event_kind {
	PG_EVENT_EXEC = 1,
	PG_EVENT_EXIT = 2,
	PG_EVENT_CONNECT = 3,
	PG_EVENT_OPEN = 4,
	PG_EVENT_MAP = 5,
	PG_EVENT_DNS = 6,
};

/* First in every event. ts_ns is CLOCK_BOOTTIME (bpf_ktime_get_boot_ns). */
struct pg_event_header {
	__u32 kind;
	__u32 pid;       /* tgid */
	__u32 tid;
	__u32 ppid;      /* real_parent->tgid; 0 where not read */
	__u64 ts_ns;
	__u64 cgroup_id; /* bpf_get_current_cgroup_id(): the v2 cgroup's inode */
	__u32 uid;
	__u32 _pad0;
	char comm[PG_COMM_LEN];
	/* group_leader->start_boottime: the process's start in ns since boot,
	 * what /proc/PID/stat's starttime is in clock ticks. With it the agent
	 * keys the process (pid + start time) of any event without reading
	 * /proc, so even a process that is gone by the time its events are read
	 * is recorded. */
	__u64 start_ns;
};

/* A file as the kernel names it: its inode number, its superblock's device
 * (the kernel's dev_t: major << 20 | minor, not stat's encoding) and its
 * change time; and the root directory (inode, device) of the task that
 * reached it, whose paths name it. Zero where unread. With it the agent
 * knows which file an exec ran or an mmap mapped, and from which root,
 * without a syscall of its own. */
struct pg_file_id {
	__u64 ino;
	__s64 ctime_sec;
	__u32 ctime_nsec;
	__u32 dev;
	__u64 root_ino;
	__u32 root_dev;
	__u32 _pad0;
};

struct pg_exec_event {
	struct pg_event_header h;
	struct pg_file_id exe; /* current->mm->exe_file: the image that runs */
	__u32 filename_len; /* bytes of filename used, without the NUL */
	/* Bytes of args used: argv as NUL-separated strings (mm->arg_start ..
	 * arg_end of the new image), at most PG_ARGS_LEN. */
	__u32 args_len;
	/* arg_end - arg_start: more than args_len when argv was cut. */
	__u32 args_total;
	__u32 _pad0;
	char filename[PG_PATH_LEN];
	char args[PG_ARGS_LEN];
};

/* One per process: the last thread of the group exited (signal->live reached
 * 0), so h.tid is that thread, not necessarily h.pid. */
struct pg_exit_event {
	struct pg_event_header h;
	__s32 exit_code; /* task->exit_code: (status << 8) | signal */
	__u32 _pad0;
};

struct pg_connect_event {
	struct pg_event_header h;
	__u16 family;   /* AF_INET (2) or AF_INET6 (10) */
	__u16 port;     /* host byte order */
	__u16 sock_type;/* socket->type: SOCK_STREAM (1), SOCK_DGRAM (2), SOCK_RAW (3)...; 0 unknown */
	__u16 _pad0;
	__s32 ret;      /* connect()'s result: 0, or -errno (-EINPROGRESS for non-blocking) */
	__u32 repeats;  /* connects of this process to this destination, with this
			 * result, counted in connect_seen and not sent since the
			 * previous record: this record stands for 1 + repeats */
	__u8 addr[16];  /* IPv4 in the first 4 bytes, network order */
};

struct pg_open_event {
	struct pg_event_header h;
	__s32 ret;      /* the fd, or -errno */
	__u32 flags;    /* open flags */
	__u32 path_len;
	__u32 _pad0;
	struct pg_file_id file; /* the file the new descriptor names */
	char path[PG_PATH_LEN];
};

/* An executable mapping (mmap with PROT_EXEC) of a descriptor that a
 * recorded open of this process returned, and that still names the same
 * file: the library was loaded, not just read. Once per open. */
struct pg_map_event {
	struct pg_event_header h;
	__s32 fd;
	__u32 prot;
	struct pg_file_id file; /* the file the descriptor names */
};

/* A packet from source port 53 (UDP, or TCP with a payload) delivered to a
 * socket on this host: a DNS answer, copied for the agent to parse. It runs
 * in the receiving path (often softirq), not in the asking process, so the
 * header says only what the socket says: kind, ts_ns, cgroup_id (the
 * receiving socket's cgroup v2, bpf_skb_cgroup_id) and uid (the socket's
 * owner, bpf_get_socket_uid); pid, tid, ppid, comm and start_ns are 0. */
struct pg_dns_event {
	struct pg_event_header h;
	__u16 family;        /* AF_INET (2) or AF_INET6 (10): the packet's */
	__u16 proto;         /* IPPROTO_UDP (17) or IPPROTO_TCP (6) */
	__u32 payload_len;   /* bytes of payload used */
	/* The transport payload's length in the packet: more than
	 * payload_len when it was cut at PG_DNS_LEN. */
	__u32 payload_total;
	__u32 _pad0;
	__u8 saddr[16];      /* the answering server, network order; IPv4 in the first 4 bytes */
	/* The UDP payload (the DNS message), or the TCP segment's payload (a
	 * 2-byte length, then the message, when the segment starts one). */
	__u8 payload[PG_DNS_LEN];
};

#endif
