//! The Linux TAP upper edge: a [`PacketPort`] backed by a `/dev/net/tun` TAP interface, so frames a
//! NIC driver transmits reach the Linux network stack and frames Linux sends reach the driver.
//!
//! Reads are non-blocking: [`PacketPort::recv`] returns `None` when nothing is pending. Interface
//! configuration (up, MTU, MAC) goes through the classic `SIOCSIF*` ioctls on an `AF_INET`
//! datagram socket, which act in the caller's network namespace. The carrier follows the driver's
//! link state through `TUNSETCARRIER` (Linux 5.0 and later).
//!
//! A TAP plays two roles: the upper edge of a NIC driver (the interface Linux sees; see
//! [`crate::net::Bridge`]), and the wire a device model is plugged into (its [`PacketPort`], whose
//! [`wake_fd`](PacketPort::wake_fd) a host loop polls).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::packet::PacketPort;

const TUN_PATH: &str = "/dev/net/tun";
const IFNAMSIZ: usize = 16;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
/// `_IOW('T', 202, int)`
const TUNSETIFF: u64 = 0x4004_54ca;
/// `_IOW('T', 226, int)`
const TUNSETCARRIER: u64 = 0x4004_54e2;
const SIOCGIFFLAGS: u64 = 0x8913;
const SIOCSIFFLAGS: u64 = 0x8914;
const SIOCGIFMTU: u64 = 0x8921;
const SIOCSIFMTU: u64 = 0x8922;
const SIOCSIFHWADDR: u64 = 0x8924;
const ARPHRD_ETHER: u16 = 1;
/// Largest frame read in one go: a 64 KiB MTU plus the Ethernet header, with room to spare.
const MAX_FRAME: usize = 65_536 + 64;

/// Which step of setting up or driving a TAP interface failed, and why.
#[derive(Debug)]
pub struct TapError {
    /// What was being attempted, e.g. "open /dev/net/tun" or "ioctl TUNSETIFF".
    pub step: &'static str,
    /// The OS error behind it.
    pub source: io::Error,
}

impl TapError {
    fn new(step: &'static str, source: io::Error) -> Self {
        TapError { step, source }
    }

    fn last(step: &'static str) -> Self {
        TapError::new(step, io::Error::last_os_error())
    }

    /// The raw errno, when the failure came from the OS.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

impl fmt::Display for TapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TAP: {} failed: {}", self.step, self.source)?;
        match self.errno() {
            Some(libc::ENOENT) | Some(libc::ENODEV) if self.step == "open /dev/net/tun" => {
                write!(f, " (is the tun module loaded / /dev/net/tun present?)")
            }
            Some(libc::EPERM) | Some(libc::EACCES) => {
                write!(f, " (needs root or CAP_NET_ADMIN)")
            }
            _ => Ok(()),
        }
    }
}

impl std::error::Error for TapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// `struct ifreq`: the name, then a 24-byte union (flags, MTU, or a `sockaddr`).
#[repr(C)]
#[derive(Clone, Copy)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> Self {
        let mut r = IfReq {
            name: [0; IFNAMSIZ],
            data: [0; 24],
        };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        r
    }

    fn set_short(&mut self, v: libc::c_short) {
        self.data[..2].copy_from_slice(&v.to_ne_bytes());
    }

    fn short(&self) -> libc::c_short {
        libc::c_short::from_ne_bytes([self.data[0], self.data[1]])
    }

    fn set_int(&mut self, v: libc::c_int) {
        self.data[..4].copy_from_slice(&v.to_ne_bytes());
    }

    fn int(&self) -> libc::c_int {
        libc::c_int::from_ne_bytes([self.data[0], self.data[1], self.data[2], self.data[3]])
    }
}

fn ioctl(fd: RawFd, req: u64, arg: *mut libc::c_void, step: &'static str) -> Result<(), TapError> {
    // SAFETY: every caller passes a request whose argument is the pointee `arg` points to
    // (an `IfReq` or a `c_int`), alive for the duration of the call.
    let rc = unsafe { libc::ioctl(fd, req as _, arg) };
    if rc < 0 {
        Err(TapError::last(step))
    } else {
        Ok(())
    }
}

/// A TAP interface as a [`PacketPort`]. Closing it (dropping) removes the interface.
#[derive(Debug)]
pub struct TapPort {
    file: File,
    name: String,
    buf: Vec<u8>,
}

impl TapPort {
    /// Creates a TAP interface named `name` (at most 15 bytes; `%d` patterns allowed), or one the
    /// kernel names when `name` is `None` or empty.
    pub fn open(name: Option<&str>) -> Result<TapPort, TapError> {
        let name = name.unwrap_or("");
        if name.len() >= IFNAMSIZ || name.bytes().any(|b| b == 0 || b == b'/' || b == b' ') {
            return Err(TapError::new(
                "check interface name",
                io::Error::new(io::ErrorKind::InvalidInput, format!("bad name {name:?}")),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(|e| TapError::new("open /dev/net/tun", e))?;
        let mut req = IfReq::new(name);
        req.set_short(IFF_TAP | IFF_NO_PI);
        ioctl(
            file.as_raw_fd(),
            TUNSETIFF,
            &mut req as *mut IfReq as *mut libc::c_void,
            "ioctl TUNSETIFF",
        )?;
        let end = req.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        let name = String::from_utf8_lossy(&req.name[..end]).into_owned();
        Ok(TapPort {
            file,
            name,
            buf: vec![0; MAX_FRAME],
        })
    }

    /// A port over a descriptor opened elsewhere (a TAP another process created and passed on):
    /// one frame per read and write. `name` is for messages. The descriptor is made
    /// non-blocking.
    pub fn from_fd(fd: OwnedFd, name: &str) -> Result<TapPort, TapError> {
        // SAFETY: fcntl on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0
            || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
        {
            return Err(TapError::last("fcntl O_NONBLOCK"));
        }
        Ok(TapPort {
            file: File::from(fd),
            name: name.to_string(),
            buf: vec![0; MAX_FRAME],
        })
    }

    /// The interface name the kernel gave it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes one frame. A full queue (`WouldBlock`) is reported as an error like any other.
    pub fn try_send(&mut self, frame: &[u8]) -> Result<(), TapError> {
        let n = self
            .file
            .write(frame)
            .map_err(|e| TapError::new("write frame", e))?;
        if n != frame.len() {
            return Err(TapError::new(
                "write frame",
                io::Error::new(io::ErrorKind::WriteZero, "short write"),
            ));
        }
        Ok(())
    }

    /// Reads one pending frame; `Ok(None)` when none is pending.
    pub fn try_recv(&mut self) -> Result<Option<Vec<u8>>, TapError> {
        loop {
            match self.file.read(&mut self.buf) {
                Ok(n) => return Ok(Some(self.buf[..n].to_vec())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TapError::new("read frame", e)),
            }
        }
    }

    /// Sets the carrier (the driver's link state). Needs Linux 5.0 or later.
    pub fn set_carrier(&self, up: bool) -> Result<(), TapError> {
        let mut v: libc::c_int = up.into();
        ioctl(
            self.file.as_raw_fd(),
            TUNSETCARRIER,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            "ioctl TUNSETCARRIER",
        )
    }

    /// Brings the interface administratively up (`IFF_UP`) or down.
    pub fn set_up(&self, up: bool) -> Result<(), TapError> {
        let sock = ctl_socket()?;
        let mut req = IfReq::new(&self.name);
        let p = &mut req as *mut IfReq as *mut libc::c_void;
        ioctl(sock.as_raw_fd(), SIOCGIFFLAGS, p, "ioctl SIOCGIFFLAGS")?;
        let up_flag = libc::IFF_UP as libc::c_short;
        let flags = if up {
            req.short() | up_flag
        } else {
            req.short() & !up_flag
        };
        req.set_short(flags);
        let p = &mut req as *mut IfReq as *mut libc::c_void;
        ioctl(sock.as_raw_fd(), SIOCSIFFLAGS, p, "ioctl SIOCSIFFLAGS")
    }

    /// The interface MTU.
    pub fn mtu(&self) -> Result<u32, TapError> {
        let sock = ctl_socket()?;
        let mut req = IfReq::new(&self.name);
        let p = &mut req as *mut IfReq as *mut libc::c_void;
        ioctl(sock.as_raw_fd(), SIOCGIFMTU, p, "ioctl SIOCGIFMTU")?;
        Ok(req.int().max(0) as u32)
    }

    /// Sets the interface MTU.
    pub fn set_mtu(&self, mtu: u32) -> Result<(), TapError> {
        let mtu = libc::c_int::try_from(mtu).map_err(|_| {
            TapError::new(
                "ioctl SIOCSIFMTU",
                io::Error::new(io::ErrorKind::InvalidInput, "MTU out of range"),
            )
        })?;
        let sock = ctl_socket()?;
        let mut req = IfReq::new(&self.name);
        req.set_int(mtu);
        let p = &mut req as *mut IfReq as *mut libc::c_void;
        ioctl(sock.as_raw_fd(), SIOCSIFMTU, p, "ioctl SIOCSIFMTU")
    }

    /// Sets the interface's Ethernet address (the Linux side's MAC, not the emulated NIC's).
    pub fn set_mac(&self, mac: [u8; 6]) -> Result<(), TapError> {
        let sock = ctl_socket()?;
        let mut req = IfReq::new(&self.name);
        // struct sockaddr: sa_family (host order), then sa_data.
        req.data[..2].copy_from_slice(&ARPHRD_ETHER.to_ne_bytes());
        req.data[2..8].copy_from_slice(&mac);
        let p = &mut req as *mut IfReq as *mut libc::c_void;
        ioctl(sock.as_raw_fd(), SIOCSIFHWADDR, p, "ioctl SIOCSIFHWADDR")
    }
}

impl std::os::fd::AsFd for TapPort {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for TapPort {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// An `AF_INET` datagram socket for the `SIOCSIF*` ioctls.
fn ctl_socket() -> Result<OwnedFd, TapError> {
    // SAFETY: plain socket(2) call; the result is checked before being wrapped.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(TapError::last("socket AF_INET"));
    }
    // SAFETY: `fd` is a freshly created descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl PacketPort for TapPort {
    fn send(&mut self, frame: &[u8]) {
        if let Err(e) = self.try_send(frame) {
            // A NIC drops frames it cannot deliver; so does the port.
            tracing::warn!(tap = %self.name, len = frame.len(), "dropping frame: {e}");
        }
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }

    fn recv(&mut self) -> Option<Vec<u8>> {
        match self.try_recv() {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(tap = %self.name, "{e}");
                None
            }
        }
    }
}
