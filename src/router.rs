//! router (stub)
