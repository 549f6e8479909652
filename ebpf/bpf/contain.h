/* patchgap host isolation: the ONE definition of what contain.bpf.c and the
 * agent's executor (agent/src/contain/, through the Rust mirrors in
 * ebpf/src/lib.rs, checked by a layout test against the object's BTF) share.
 * Fixed-width fields only, naturally aligned, every pad spelled out. */
#ifndef PATCHGAP_CONTAIN_H
#define PATCHGAP_CONTAIN_H

/* Entries of each allow-list trie (IPv4 and IPv6 separately). */
#define PG_CONTAIN_ALLOW_MAX 1024
/* Bytes of the spec record the executor keeps next to the pins. */
#define PG_CONTAIN_SPEC_BYTES 4096

/* ct_config.mode. 0 is not a mode: a zeroed config (never written) blocks,
 * as enforce does, so a half-set-up instance fails closed. */
enum pg_contain_mode {
	PG_CONTAIN_SHADOW = 1,
	PG_CONTAIN_ENFORCE = 2,
};

/* ct_config[0]: the instance's knobs, set by the executor before attach. */
struct pg_contain_config {
	__u32 mode; /* enum pg_contain_mode */
	__u32 _pad0;
};

/* ct_counters[0]: what the instance blocked (enforce) or would have blocked
 * (shadow). Times are CLOCK_BOOTTIME ns (bpf_ktime_get_boot_ns), 0 until the
 * first one; each is set once, with a compare-and-swap. */
struct pg_contain_counters {
	__u64 blocked_connects;
	__u64 blocked_packets;
	__u64 would_block_connects;
	__u64 would_block_packets;
	__u64 first_block_ns;
	__u64 first_would_block_ns;
};

/* LPM trie keys: prefix length in bits, then the address in network order.
 * The value (a __u8, 1) only says "allowed". */
struct pg_contain_v4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct pg_contain_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* ct_spec[0]: the isolation as the executor applied it, JSON, NUL-padded.
 * bpffs holds only BPF objects, so the spec lives in a pinned map and goes
 * with the pins it describes. The programs never read it. */
struct pg_contain_spec {
	__u8 json[PG_CONTAIN_SPEC_BYTES];
};

#endif
