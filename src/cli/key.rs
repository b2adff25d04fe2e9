//! `cachefs key`: the sha256 key of a text, the way clients name entries
//! (`hashlib.sha256(text.encode()).hexdigest()`): exactly the bytes given,
//! no newline added or removed.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use cachefs::store::{Layout, Namespace};

/// `text`: the text itself, or `None`/`-` for all of stdin.
pub fn run(text: Option<&str>, namespace: Option<&str>) -> Result<ExitCode> {
    let bytes = match text {
        None | Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
            buf
        }
        Some(t) => t.as_bytes().to_vec(),
    };
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    let hex = Layout::hex_digest(&digest);
    match namespace {
        Some(ns) => {
            let ns = Namespace::parse(ns.as_bytes())
                .map_err(|e| anyhow::anyhow!("bad namespace {ns:?}: {e}"))?;
            outln!("{ns}/{hex}")?;
        }
        None => outln!("{hex}")?,
    }
    Ok(ExitCode::SUCCESS)
}
