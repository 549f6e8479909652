/* The socket-buffer context of cgroup_skb programs (uapi/linux/bpf.h's
 * struct __sk_buff), up to the last field patchgap.bpf.c reads. The verifier
 * rewrites every access to it, so this is the plain uapi layout, not a CO-RE
 * type. Kept out of vmlinux_min.h, which contain.bpf.c shares: that object's
 * programs read packets only through bpf_skb_load_bytes and see the struct
 * only as a pointer, and its bytes stay as they are. */
#ifndef PATCHGAP_SKB_H
#define PATCHGAP_SKB_H

#include "vmlinux_min.h"

struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol; /* ETH_P_* in network byte order */
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;     /* direct packet access: the network header here */
	__u32 data_end;
};

#define PG_ETH_P_IP 0x0800
#define PG_ETH_P_IPV6 0x86DD
#define PG_IPPROTO_TCP 6
#define PG_IPPROTO_UDP 17

#endif
