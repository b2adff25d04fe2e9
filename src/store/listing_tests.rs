//! Checks of listings for the Store-level property test
//! (`tree_prop_tests.rs`): the listing stamp's invariant (`listing.rs`)
//! and `du -s` as a walk of the listings.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;

use super::{DirItem, Key, KeyFormat, ListingStamp, Lookup, Namespace, Store};

/// Each directory's first listing under its generation, with its stamp.
pub(super) type Seen = HashMap<String, (ListingStamp, Vec<DirItem>)>;

/// A listing taken while an earlier one's stamp still holds is that
/// listing (no change escaped the generation), and the generation read
/// alone is the listing's.
pub(super) fn check_stamps(
    s: &Store,
    ns: &Namespace,
    dirs: &BTreeSet<String>,
    seen: &mut Seen,
) -> Result<(), TestCaseError> {
    let id = s.namespace_id(ns).unwrap();
    for d in dirs {
        let (items, stamp) = s
            .list_dir_stamped(ns, d.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("ls {d:?}: {e}")))?;
        prop_assert_eq!(s.dir_generation(id, d.as_bytes()), Some(stamp.generation));
        match seen.get(d) {
            Some((was, listed)) if was.holds(stamp.generation, s.now()) => {
                prop_assert_eq!(&items, listed, "listing of {:?} changed under {:?}", d, was);
                prop_assert_eq!(stamp, *was);
            }
            _ => {
                seen.insert(d.clone(), (stamp, items));
            }
        }
    }
    Ok(())
}

/// `du -s DIR`: the logical bytes a walk of the listings finds under
/// `dir` (and the stored bytes beside them).
pub(super) fn du(s: &Store, ns: &Namespace, dir: &str) -> Result<(u64, u64), TestCaseError> {
    let mut todo = vec![dir.to_string()];
    let (mut logical, mut stored) = (0, 0);
    while let Some(d) = todo.pop() {
        let items = s
            .list_dir(ns, d.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("ls {d}: {e}")))?;
        for item in items {
            let join = |n: &[u8]| {
                let n = String::from_utf8(n.to_vec()).unwrap();
                if d.is_empty() { n } else { format!("{d}/{n}") }
            };
            match item {
                DirItem::Dir { name } => todo.push(join(&name)),
                DirItem::File { name, .. } => match s.entry_info(
                    ns,
                    &Key::parse(join(&name).as_bytes(), KeyFormat::Any).unwrap(),
                ) {
                    Lookup::Hit(info) => {
                        logical += info.logical_size;
                        stored += info.stored_bytes;
                    }
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "{} listed but {other:?}",
                            join(&name)
                        )));
                    }
                },
            }
        }
    }
    Ok((logical, stored))
}
