// SPDX-License-Identifier: GPL-2.0
/* patchgap host isolation: a workload's cgroup may reach only allow-listed
 * destinations. One instance of this object is loaded per isolated cgroup,
 * with its own maps, and attached to that cgroup with BPF_F_ALLOW_MULTI, so
 * other BPF users of the cgroup (and of its ancestors) keep their programs.
 *
 * Its own object, apart from patchgap.bpf.o: aya fails a whole object on one
 * failed relocation, and the sensing programs must not depend on these (or
 * the other way round). Nothing here is CO-RE: the contexts are uapi structs
 * whose accesses the verifier rewrites.
 *
 * Built by ebpf/build.sh like patchgap.bpf.c. Needs: cgroup BPF links (5.7,
 * so the executor can pin them), bpf_ktime_get_boot_ns (5.8), BPF atomics
 * with compare-and-swap (5.12, -mcpu=v3). */

#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "contain.h"

char LICENSE[] SEC("license") = "GPL";

/* cgroup_skb return values: 1 lets the packet go, 0 drops it (the sender
 * sees EPERM on a send, a TCP SYN is simply lost). cgroup/connect*: 1 lets
 * the connect go on, 0 fails it with EPERM at once. */
#define PG_PASS 1
#define PG_DROP 0

/* The types the executor mirrors, named in the object's BTF for the Rust
 * layout test. Never read by the programs. */
const struct pg_contain_counters *const pg_btf_contain_counters __attribute__((unused)) = 0;
const struct pg_contain_config *const pg_btf_contain_config __attribute__((unused)) = 0;
const struct pg_contain_spec *const pg_btf_contain_spec __attribute__((unused)) = 0;
const enum pg_contain_mode pg_btf_contain_mode __attribute__((unused)) = PG_CONTAIN_SHADOW;

/* ---- Maps (all pinned by the executor next to the links) ---- */

/* Allowed IPv4 destinations by prefix. Loopback is also allowed in code. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PG_CONTAIN_ALLOW_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pg_contain_v4_key);
	__type(value, __u8);
} ct_allow4 SEC(".maps");

/* Allowed IPv6 destinations by prefix. ::1 is also allowed in code. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PG_CONTAIN_ALLOW_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pg_contain_v6_key);
	__type(value, __u8);
} ct_allow6 SEC(".maps");

/* The mode, one entry: a map rather than a load-time global, so that a
 * restarted agent can read it from the pin (and could change it in place). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pg_contain_config);
} ct_config SEC(".maps");

/* The evidence: one shared entry, not per CPU, so that "the first block"
 * is one compare-and-swap. Only blocked or would-block traffic touches it;
 * allowed traffic costs a trie lookup and nothing else. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pg_contain_counters);
} ct_counters SEC(".maps");

/* The executor's record of what it applied (see contain.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pg_contain_spec);
} ct_spec SEC(".maps");

/* ---- Shared steps ---- */

/* A destination that is not allowed: count it, remember when the first one
 * happened, and say whether to let it through (shadow) or not (enforce, and
 * anything that is not explicitly shadow: fail closed). */
static __always_inline int not_allowed(int is_connect)
{
	__u32 zero = 0;
	struct pg_contain_config *cfg = bpf_map_lookup_elem(&ct_config, &zero);
	struct pg_contain_counters *c = bpf_map_lookup_elem(&ct_counters, &zero);
	int shadow = cfg && cfg->mode == PG_CONTAIN_SHADOW;

	if (c) {
		__u64 now = bpf_ktime_get_boot_ns();

		if (shadow) {
			if (is_connect)
				__sync_fetch_and_add(&c->would_block_connects, 1);
			else
				__sync_fetch_and_add(&c->would_block_packets, 1);
			/* The plain read keeps the common case (already set) free
			 * of a locked instruction. */
			if (!c->first_would_block_ns)
				__sync_val_compare_and_swap(&c->first_would_block_ns, 0, now);
		} else {
			if (is_connect)
				__sync_fetch_and_add(&c->blocked_connects, 1);
			else
				__sync_fetch_and_add(&c->blocked_packets, 1);
			if (!c->first_block_ns)
				__sync_val_compare_and_swap(&c->first_block_ns, 0, now);
		}
	}
	return shadow ? PG_PASS : PG_DROP;
}

static __always_inline int v4_allowed(struct pg_contain_v4_key *key)
{
	/* 127.0.0.0/8 always: the workload's own loopback services. */
	if (key->addr[0] == 127)
		return 1;
	return bpf_map_lookup_elem(&ct_allow4, key) != 0;
}

static __always_inline int v6_allowed(struct pg_contain_v6_key *key)
{
	__u32 w[4];

	__builtin_memcpy(w, key->addr, sizeof(w));
	/* ::1 always. */
	if (w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == bpf_htonl(1))
		return 1;
	return bpf_map_lookup_elem(&ct_allow6, key) != 0;
}

/* ---- Programs ---- */

/* Every IPv4/IPv6 packet the cgroup's sockets send, after routing
 * (ip_finish_output / ip6_finish_output run the cgroup egress hook,
 * BPF_CGROUP_INET_EGRESS, since 4.10). This is what cuts connections that
 * were open before the isolation, and unconnected UDP. skb->data is the
 * network header here. */
SEC("cgroup_skb/egress")
int pg_ct_egress(struct __sk_buff *skb)
{
	__u8 version;

	if (bpf_skb_load_bytes(skb, 0, &version, 1))
		return PG_PASS; /* no network header: not IP traffic */
	version >>= 4;

	if (version == 4) {
		struct pg_contain_v4_key key = { .prefixlen = 32 };

		/* iphdr.daddr is at byte 16. */
		if (bpf_skb_load_bytes(skb, 16, key.addr, sizeof(key.addr)))
			return not_allowed(0);
		if (v4_allowed(&key))
			return PG_PASS;
		return not_allowed(0);
	}
	if (version == 6) {
		struct pg_contain_v6_key key = { .prefixlen = 128 };

		/* ipv6hdr.daddr is at byte 24. */
		if (bpf_skb_load_bytes(skb, 24, key.addr, sizeof(key.addr)))
			return not_allowed(0);
		if (v6_allowed(&key))
			return PG_PASS;
		return not_allowed(0);
	}
	return PG_PASS;
}

/* connect(2) on an AF_INET socket (TCP and UDP), before the kernel does
 * anything (__inet_stream_connect / udp pre_connect run
 * BPF_CGROUP_INET4_CONNECT, since 4.17). Returning 0 fails the call with
 * EPERM at once: the workload sees the block without waiting for a SYN
 * timeout, and so does the test that proves it. */
SEC("cgroup/connect4")
int pg_ct_connect4(struct bpf_sock_addr *ctx)
{
	struct pg_contain_v4_key key = { .prefixlen = 32 };
	__u32 ip = ctx->user_ip4;

	__builtin_memcpy(key.addr, &ip, sizeof(ip));
	if (v4_allowed(&key))
		return PG_PASS;
	return not_allowed(1);
}

/* connect(2) on an AF_INET6 socket (BPF_CGROUP_INET6_CONNECT). A
 * v4-mapped destination (::ffff:a.b.c.d, a dual-stack socket reaching an
 * IPv4 host) is checked against the IPv4 list, as its packets will be. */
SEC("cgroup/connect6")
int pg_ct_connect6(struct bpf_sock_addr *ctx)
{
	__u32 w0 = ctx->user_ip6[0];
	__u32 w1 = ctx->user_ip6[1];
	__u32 w2 = ctx->user_ip6[2];
	__u32 w3 = ctx->user_ip6[3];

	if (w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff)) {
		struct pg_contain_v4_key key4 = { .prefixlen = 32 };

		__builtin_memcpy(key4.addr, &w3, sizeof(w3));
		if (v4_allowed(&key4))
			return PG_PASS;
		return not_allowed(1);
	}

	struct pg_contain_v6_key key = { .prefixlen = 128 };

	__builtin_memcpy(&key.addr[0], &w0, 4);
	__builtin_memcpy(&key.addr[4], &w1, 4);
	__builtin_memcpy(&key.addr[8], &w2, 4);
	__builtin_memcpy(&key.addr[12], &w3, 4);
	if (v6_allowed(&key))
		return PG_PASS;
	return not_allowed(1);
}
