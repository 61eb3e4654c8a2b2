//! Connections made from inside another process's network namespace.
//!
//! Apps on a private network publish no ports, so the host cannot reach their servers on
//! loopback. A health probe instead enters the container's network namespace
//! (`/proc/<pid>/ns/net`) and connects to `127.0.0.1:<port>` there, which works the same on
//! Docker and Podman, on any network, with no published port and no traffic leaving the
//! container's namespace. A socket keeps the namespace it was made in, so only the connect
//! happens on the foreign thread; the stream is then used on the runtime as usual.
//!
//! Entering a namespace changes the calling thread for good, so each connect runs on a
//! fresh thread of its own that ends right after, never on a pooled one.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

/// Why a connect inside a namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace could not be entered (no such process, or not allowed: entering needs
    /// root).
    #[error("cannot enter the network namespace of pid {pid}: {source}")]
    Enter {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    /// Inside the namespace, nothing accepted the connection in time.
    #[error("{addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the namespace thread ended without an answer")]
    Lost,
}

/// Connects to `127.0.0.1:port` inside the network namespace of process `pid`, within
/// `timeout`.
pub async fn connect_loopback(
    pid: u32,
    port: u16,
    timeout: Duration,
) -> Result<tokio::net::TcpStream, NetnsError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("netns-{pid}"))
        .spawn(move || {
            let _ = tx.send(connect_blocking(pid, port, timeout));
        });
    if let Err(source) = spawned {
        return Err(NetnsError::Enter { pid, source });
    }
    let stream = rx.await.map_err(|_| NetnsError::Lost)??;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(stream))
        .map_err(|source| NetnsError::Connect { addr, source })
}

fn connect_blocking(pid: u32, port: u16, timeout: Duration) -> Result<TcpStream, NetnsError> {
    let enter = |source| NetnsError::Enter { pid, source };
    let ns = File::open(format!("/proc/{pid}/ns/net")).map_err(enter)?;
    move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|e| enter(e.into()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| NetnsError::Connect { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_inside_our_own_namespace() {
        // Our own namespace stands in for a container's: the path through setns is the
        // same, and a listener on our loopback answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pid = std::process::id();
        let stream = connect_loopback(pid, port, Duration::from_secs(2)).await;
        let root =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
        match stream {
            Ok(s) => assert_eq!(s.peer_addr().unwrap().port(), port),
            // Without CAP_SYS_ADMIN the kernel refuses setns even into our own namespace.
            Err(NetnsError::Enter { source, .. }) if !root => {
                assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied)
            }
            Err(e) => panic!("{e}"),
        }
        drop(listener);
        let refused = connect_loopback(pid, port, Duration::from_secs(2)).await;
        assert!(refused.is_err(), "nothing listens any more");
        let gone = connect_loopback(u32::MAX, port, Duration::from_secs(1)).await;
        assert!(matches!(gone, Err(NetnsError::Enter { .. })), "{gone:?}");
    }
}
