//! Socket options the UDP listeners share (STUN's two ports and each relayed allocation).

/// Asks for `n`-byte socket buffers, so a burst is queued rather than dropped; beyond
/// `rmem_max`/`wmem_max` only root may, and the kernel's limit is kept otherwise.
pub fn enlarge_buffers_to(socket: &impl std::os::fd::AsFd, n: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &n).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &n);
    }
    if setsockopt(socket, sockopt::SndBufForce, &n).is_err() {
        let _ = setsockopt(socket, sockopt::SndBuf, &n);
    }
}
