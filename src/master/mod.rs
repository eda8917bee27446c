//! master (stub)
