//! The service manager's readiness protocol (sd_notify(3)): one datagram
//! per state change, such as `READY=1`, sent to the unix socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//! Without the variable every call does nothing. The protocol is a
//! dozen lines over std's `UnixDatagram`; a crate would add nothing.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`. A malformed one is an error: systemd would
    /// otherwise wait for a READY=1 that can never arrive.
    pub fn from_env() -> io::Result<Notifier> {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET").filter(|n| !n.is_empty()) else {
            return Ok(Notifier { target: None });
        };
        let addr = match name.as_bytes().strip_prefix(b"@") {
            Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
            None => SocketAddr::from_pathname(&name)?,
        };
        Ok(Notifier {
            target: Some((UnixDatagram::unbound()?, addr)),
        })
    }

    /// Sends newline-separated `KEY=value` assignments. Failure is logged,
    /// not fatal: the cache works whether or not anyone listens. A listener
    /// that has gone (the mount helper exits once the mount is ready) is
    /// expected, so that is only debug detail.
    pub fn notify(&self, state: &str) {
        if let Some((sock, addr)) = &self.target
            && let Err(e) = sock.send_to_addr(state.as_bytes(), addr)
        {
            let gone = matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            );
            let level = if gone {
                log::Level::Debug
            } else {
                log::Level::Warn
            };
            log::log!(level, "cannot notify the service manager ({state:?}): {e}");
        }
    }
}
