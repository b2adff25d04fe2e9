//! A listing's lines are the entries as they are when they are read
//! (PRODUCT.md section 7): READDIRPLUS reads each entry where OPENDIR
//! found it, and a name replaced, renamed away or removed in between is
//! shown new or left out, never as OPENDIR saw it. More entries than one
//! chunk of the daemon's lookups (256), at the top of a namespace and in a
//! directory inside it.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;

const CFG: &str = "[namespace.a]\n";
const ENTRIES: usize = 300;

/// Fills directory `dir` with `ENTRIES` entries of 10 bytes, opens it
/// (OPENDIR), then replaces `k000` with 1,000 bytes, renames `k001` to
/// `z001` (the same version under another name) and removes `k002`
/// before the first read of the listing; returns name -> size as the
/// listing's entries stat (from the attributes their lines gave).
fn listed_after_changes(dir: &Path) -> BTreeMap<String, u64> {
    fs::create_dir_all(dir).unwrap();
    for i in 0..ENTRIES {
        fs::write(dir.join(format!("k{i:03}")), b"0123456789").unwrap();
    }
    let listing = fs::read_dir(dir).unwrap();
    fs::write(dir.join("k000"), vec![b'x'; 1000]).unwrap();
    // The replacement is published at its RELEASE, after close returned.
    assert!(
        wait_until(Duration::from_secs(10), || {
            fs::metadata(dir.join("k000")).is_ok_and(|m| m.len() == 1000)
        }),
        "the replacement of k000 was never published"
    );
    fs::rename(dir.join("k001"), dir.join("z001")).unwrap();
    fs::remove_file(dir.join("k002")).unwrap();
    listing
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, e.metadata().unwrap().len())
        })
        .collect()
}

fn check(got: &BTreeMap<String, u64>) {
    assert_eq!(got.get("k000"), Some(&1000), "k000 shows its new version");
    let first: Vec<_> = got.iter().take(4).collect();
    assert!(
        !got.contains_key("k001"),
        "k001 was renamed away: {first:?}"
    );
    assert!(!got.contains_key("k002"), "k002 was removed");
    for i in 3..ENTRIES {
        assert_eq!(got.get(&format!("k{i:03}")), Some(&10), "k{i:03}");
    }
}

#[test]
fn a_listing_shows_entries_as_they_are_when_read() {
    if skip_without_fuse() {
        return;
    }
    let m = Mount::new(CFG);
    check(&listed_after_changes(&m.ns("a")));
    check(&listed_after_changes(&m.ns("a").join("d")));
}
