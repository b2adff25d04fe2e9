//! The read-only `.cachefs/` directory: files rendered fresh at each open
//! from one consistent snapshot of the store.

use super::inodes::{CONFIG_TOML, METRICS_PROM, STATS_JSON};
use crate::store::Store;

pub const FILES: [(u64, &str); 3] = [
    (STATS_JSON, "stats.json"),
    (METRICS_PROM, "metrics.prom"),
    (CONFIG_TOML, "config.toml"),
];

pub fn ino_of(name: &[u8]) -> Option<u64> {
    FILES
        .iter()
        .find(|(_, n)| n.as_bytes() == name)
        .map(|(i, _)| *i)
}

pub fn render(store: &Store, ino: u64) -> Vec<u8> {
    match ino {
        STATS_JSON => store.stats().to_json().into_bytes(),
        METRICS_PROM => store.stats().to_prometheus().into_bytes(),
        CONFIG_TOML => store
            .config()
            .to_toml(store.usage().quota_bytes)
            .into_bytes(),
        _ => Vec::new(),
    }
}
