//! cachefs: a FUSE filesystem cache with TTL on read, LRU byte quotas,
//! atomic publish, and a persistent hash-sharded backing directory.
//!
//! Layers, dependencies pointing down only:
//! `main` (CLI) -> `fs` (FUSE translation) -> `store` (the cache) ->
//! `config`, `metrics`, `names`, `access` (leaves).

pub mod access;
pub mod config;
pub mod fs;
pub mod metrics;
pub mod names;
pub mod store;
pub mod sync;
