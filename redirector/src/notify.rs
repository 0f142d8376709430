//! systemd readiness (`Type=notify`): send `READY=1` and friends to `$NOTIFY_SOCKET`.
//!
//! A few lines instead of a dependency; a no-op when not started by systemd.

use std::os::unix::net::UnixDatagram;

use crate::Error;

/// Send `state` (e.g. `"READY=1"`) to systemd if `$NOTIFY_SOCKET` is set.
pub fn notify(state: &str) -> Result<(), Error> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let socket = path.to_string_lossy().into_owned();
    let err = |source| Error::Notify {
        socket: socket.clone(),
        source,
    };
    let sock = UnixDatagram::unbound().map_err(err)?;
    if let Some(abstract_name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .map_err(err)?;
        sock.send_to_addr(state.as_bytes(), &addr).map_err(err)?;
    } else {
        sock.send_to(state.as_bytes(), &socket).map_err(err)?;
    }
    Ok(())
}
