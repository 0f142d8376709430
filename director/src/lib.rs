//! xdplb director: filled by its own issue; nothing here works yet.
