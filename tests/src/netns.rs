//! Reaching a TCP port inside a network namespace from the test process (which stays in its
//! own): a forwarding listener on loopback whose connections are made from a thread that joined
//! the namespace with `setns`.

use std::fs::File;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// Connects to `127.0.0.1:port` inside namespace `ns`.
pub fn connect_in(ns: &str, port: u16) -> io::Result<TcpStream> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        let f = File::open(format!("/var/run/netns/{ns}"))?;
        // SAFETY: setns on a valid namespace fd; it only changes this short-lived thread's
        // network namespace, which is what the socket below must be created in.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        TcpStream::connect(("127.0.0.1", port))
    })
    .join()
    .map_err(|_| io::Error::other("setns thread panicked"))?
}

/// Listens on a free loopback port here and forwards each connection to `127.0.0.1:port`
/// inside `ns`; returns the local port. The listener lives as long as the process.
pub fn forward(ns: &str, port: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("forwarding listener");
    let local = listener.local_addr().expect("local addr").port();
    let ns = ns.to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let ns = ns.clone();
            std::thread::spawn(move || {
                // chromedriver may not be listening yet: the client's retry loop copes.
                let Ok(server) = connect_in(&ns, port) else {
                    return;
                };
                pipe(client, server);
            });
        }
    });
    local
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let t = std::thread::spawn(move || copy(a, b2));
    copy(b, a2);
    let _ = t.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
