//! xdplb redirector: filled by its own issue; nothing here works yet.
