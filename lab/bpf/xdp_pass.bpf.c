// SPDX-License-Identifier: GPL-2.0
/*
 * The lab's XDP pass program. A veth only delivers frames that its peer sent with native
 * XDP_TX / XDP_REDIRECT when this side has an XDP program attached (that turns on the veth's
 * NAPI receive path). The lab attaches this program to the router's side of every director
 * link, so the directors can run in native mode. It touches nothing.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
