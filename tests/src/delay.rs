//! A user-space delay line for the NAT lab (this kernel has no `netem`): forwards every
//! Ethernet frame between two interfaces through raw `AF_PACKET` sockets, holding each for a
//! fixed delay, dropping a share of them at random and letting them leave no faster than a set
//! rate, as a long, lossy uplink of some speed would. One
//! thread reads each direction, one writes it (a frame waits in a queue with its departure
//! time), so a slow writer never delays the reads.
//!
//! It runs as its own small program, `delayline A B MS LOSS MBITS` (`src/bin/delayline.rs`), inside
//! the namespace that holds both interfaces, until it is killed; [`crate::lab::Lab::slow_uplink`]
//! sets it up.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `PACKET_IGNORE_OUTGOING` (linux/if_packet.h): a socket does not read back what it sent.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// How early a frame may leave (see the writer in [`direction`]): bursts stay under this.
const SLACK: Duration = Duration::from_micros(500);

/// Largest frame read: the interfaces' offloads are off, so frames are at most the MTU.
const FRAME: usize = 65_536;

/// What a delay line does to each direction.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// How long each frame is held.
    pub delay: Duration,
    /// The share of frames dropped (0–1).
    pub loss: f64,
    /// The link's rate in bits a second (frames leave one after another, each taking its
    /// length at this rate, as on a real link: no bursts faster than it); 0: no cap.
    pub rate_bps: u64,
}

/// Forwards both ways between `a` and `b`, shaped by `shape`, until killed.
pub fn run(a: &str, b: &str, shape: Shape) -> io::Result<()> {
    let fa = Arc::new(open(a)?);
    let fb = Arc::new(open(b)?);
    let ab = direction(fa.clone(), fb.clone(), shape, 0x9e37_79b9_7f4a_7c15);
    let ba = direction(fb, fa, shape, 0xd1b5_4a32_d192_ed03);
    for handle in ab.into_iter().chain(ba) {
        let _ = handle.join();
    }
    Ok(())
}

/// One direction: a reader that stamps and (sometimes) drops, a writer that waits and sends.
fn direction(
    from: Arc<OwnedFd>,
    to: Arc<OwnedFd>,
    shape: Shape,
    seed: u64,
) -> Vec<std::thread::JoinHandle<()>> {
    let Shape {
        delay,
        loss,
        rate_bps,
    } = shape;
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(65_536);
    let reader = std::thread::spawn(move || {
        let mut rng = seed;
        let mut buf = vec![0u8; FRAME];
        loop {
            // SAFETY: `buf` is valid for `FRAME` bytes; the descriptor is an open socket.
            let n = unsafe { libc::recv(from.as_raw_fd(), buf.as_mut_ptr().cast(), FRAME, 0) };
            if n <= 0 {
                continue;
            }
            // xorshift64: uniform enough for a drop decision.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if (rng >> 11) as f64 / (1u64 << 53) as f64 >= loss {
                let due = Instant::now() + delay;
                if tx.send((due, buf[..n as usize].to_vec())).is_err() {
                    return;
                }
            }
        }
    });
    let writer = std::thread::spawn(move || {
        // When the link is free again: a frame leaves at its due time or once the frame before
        // it has gone, whichever is later.
        let mut free = Instant::now();
        while let Ok((due, frame)) = rx.recv() {
            let leave = if rate_bps > 0 { due.max(free) } else { due };
            let now = Instant::now();
            // A sleep is too coarse for one frame's time on the wire (120 µs at 100 Mbit/s):
            // frames due within `SLACK` leave at once, and the link's clock keeps the average.
            if leave > now + SLACK {
                std::thread::sleep(leave - now);
            }
            if rate_bps > 0 {
                let on_wire = Duration::from_secs_f64(frame.len() as f64 * 8.0 / rate_bps as f64);
                free = leave + on_wire;
            }
            // SAFETY: `frame` is valid for its length; the descriptor is an open socket.
            unsafe { libc::send(to.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        }
    });
    vec![reader, writer]
}

/// A raw socket bound to interface `name`, promiscuous, not reading back its own frames.
fn open(name: &str) -> io::Result<OwnedFd> {
    let c_name = CString::new(name).map_err(|_| io::Error::other("bad interface name"))?;
    // SAFETY: plain FFI calls with valid arguments; every result is checked.
    unsafe {
        let index = libc::if_nametoindex(c_name.as_ptr());
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, libc::c_int::from(proto));
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = index as libc::c_int;
        let bound = libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        );
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        let set = |level, option, value: *const libc::c_void, len| {
            libc::setsockopt(fd.as_raw_fd(), level, option, value, len)
        };
        let int_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        if set(
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            (&one as *const libc::c_int).cast(),
            int_len,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        let mut mreq: libc::packet_mreq = std::mem::zeroed();
        mreq.mr_ifindex = index as libc::c_int;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        if set(
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&mreq as *const libc::packet_mreq).cast(),
            std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        let buffer: libc::c_int = 8 << 20;
        set(
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&buffer as *const libc::c_int).cast(),
            int_len,
        );
        set(
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (&buffer as *const libc::c_int).cast(),
            int_len,
        );
        Ok(fd)
    }
}
