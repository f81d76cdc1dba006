//! File descriptors over a Unix socket (SCM_RIGHTS), and the peer's user id (SO_PEERCRED).
//!
//! `rsmld attach` hands the daemon's pipes to the server this way, so that the server reads
//! and writes them directly: no byte of the protocol passes through the attach process.
//! Plain `libc` calls on a `std` stream: the two calls and one control message needed here
//! do not justify another dependency.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Most descriptors one message carries (attach sends two: stdin and stdout).
pub const MAX_FDS: usize = 2;

/// Room for a control message of [`MAX_FDS`] descriptors, aligned for `cmsghdr`.
#[repr(C)]
struct CmsgSpace {
    _align: [libc::cmsghdr; 0],
    bytes: [u8; 64],
}

/// Sends `data` (at least one byte) with `fds` attached, in one `sendmsg`.
pub fn send_with_fds(stream: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if data.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "one to a few bytes and at most two descriptors",
        ));
    }
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut space = CmsgSpace {
        _align: [],
        bytes: [0; 64],
    };
    let fd_bytes = std::mem::size_of_val(fds) as libc::c_uint;
    // SAFETY: CMSG_SPACE is a pure computation on a length.
    let control_len = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    // SAFETY: an all-zero msghdr is a valid empty value; the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.bytes.as_mut_ptr().cast();
    msg.msg_controllen = control_len as _;
    // SAFETY: msg points at a control buffer of control_len (<= 64) bytes, aligned for
    // cmsghdr, so CMSG_FIRSTHDR is non-null and its data has room for `fds`.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes) as _;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr().cast::<u8>(),
            libc::CMSG_DATA(cmsg),
            fd_bytes as usize,
        );
    }
    // SAFETY: msg and everything it points at live until the call returns.
    let sent = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    if (sent as usize) < data.len() {
        // The descriptors went with the first byte; the rest is plain data.
        use std::io::Write;
        (&*stream).write_all(&data[sent as usize..])?;
    }
    Ok(())
}

/// Receives into `buf` with one `recvmsg`: the bytes read (0 at end of stream) and the
/// descriptors that came with them (close-on-exec; closed when dropped).
pub fn recv_with_fds(stream: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut space = CmsgSpace {
        _align: [],
        bytes: [0; 64],
    };
    // SAFETY: an all-zero msghdr is a valid empty value; the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.bytes.as_mut_ptr().cast();
    msg.msg_controllen = space.bytes.len() as _;
    // SAFETY: msg points at live buffers of the lengths it states.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of well-formed
    // control messages; the CMSG_* macros walk exactly those, and each SCM_RIGHTS payload
    // is an array of descriptors now owned by this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                let count = len / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "more descriptors than expected (control message truncated)",
        ));
    }
    Ok((n as usize, fds))
}

/// The user id of the process at the other end of `stream` (SO_PEERCRED).
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    // SAFETY: an all-zero ucred is a valid value.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// This process's effective user id.
pub fn own_uid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn descriptors_cross_the_socket_and_stay_usable() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut r, w) = UnixStream::pair().unwrap();
        send_with_fds(&a, b"hello\n", &[w.as_raw_fd()]).unwrap();
        drop(w);
        let mut buf = [0u8; 64];
        let (n, fds) = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello\n");
        assert_eq!(fds.len(), 1);
        let mut got = std::fs::File::from(fds.into_iter().next().unwrap());
        got.write_all(b"through").unwrap();
        drop(got);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "through");
        assert_eq!(peer_uid(&b).unwrap(), own_uid());
        drop(a);
        assert_eq!(recv_with_fds(&b, &mut buf).unwrap().0, 0);
    }
}
