//! Memory of the store's index per entry, without FUSE:
//!
//!     cargo run --release --example index_memory -- DIR 100000
//!
//! On an empty DIR it publishes N one-byte entries and saves the index;
//! run again on the same DIR to measure a start from that snapshot.
//! Prints the process's RSS growth per entry held in the index.
//!
//! The quota is lifted (to what the volume holds): under the default
//! 1 GiB a one-byte entry's 4 KiB block would cap the index at 262144
//! entries, and a run of 10^6 would measure evictions instead.

use std::sync::Arc;

use cachefs::config::{Config, KeyFormat};
use cachefs::store::{Key, Namespace, Owner, Store, SystemClock, WriteFrom};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(n)) = (args.next(), args.next().and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!("usage: index_memory DIR ENTRIES");
        std::process::exit(2);
    };
    let config = Config::parse("[cache]\nmax_bytes = \"1PiB\"\n[namespace.a]\n").expect("config");
    let before = rss_kib();
    let store = Store::open(std::path::Path::new(&dir), config, Arc::new(SystemClock))
        .expect("open the backing dir");
    let entries = store.usage().entries;
    if let Some(per_entry) = ((rss_kib() - before) * 1024).checked_div(entries) {
        println!("started with {entries} entries: {per_entry} bytes per entry");
        return;
    }
    let ns = Namespace::parse(b"a").expect("namespace");
    let owner = Owner {
        uid: 0,
        gid: 0,
        mode: 0o644,
    };
    let before = rss_kib();
    for i in 0..n {
        let key = Key::parse(format!("{i:064x}").as_bytes(), KeyFormat::Any).expect("key");
        let mut st = store
            .begin_write(&ns, &key, WriteFrom::Empty, owner)
            .expect("stage");
        store.write_staged(&mut st, 0, b"x").expect("write");
        store.publish(st).expect("publish");
    }
    let grown = (rss_kib() - before) * 1024;
    let entries = store.usage().entries;
    if entries != n {
        eprintln!("only {entries} of {n} entries stayed (quota or entry limit)");
    }
    println!(
        "published {entries} entries: {} bytes per entry",
        grown / entries.max(1)
    );
    store
        .save_snapshot()
        .expect("save the index")
        .expect("the index is complete");
}
