/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Test-only entry points around the director's XDP program, never shipped, never attached:
 * director/tests/fast_path.rs loads this object with every map reused from the daemon's pins
 * and runs the same packets through both, to hold the fast path to the general one.
 *
 * xdplb_director_probed is the whole program, counting in fast_path_probe which path each
 * packet took (0: the general one, 1: the fast one); xdplb_director_general is the general
 * path alone. */
#define XDPLB_FAST_PATH_PROBE
#include "../director.bpf.c"

SEC("xdp")
int xdplb_director_probed(struct xdp_md *ctx)
{
	return director(ctx);
}

SEC("xdp")
int xdplb_director_general(struct xdp_md *ctx)
{
	return director_general(ctx);
}
