//! The manager <-> driver-host protocol over a Unix stream socket: every message is a 4-byte
//! little-endian length and that many bytes; the first byte is the message tag, then the fields in
//! order (integers little endian, byte strings and lists prefixed with a u32 count, strings UTF-8).
//! The manager sends a [`Request`], the driver host answers with one [`Reply`]; a
//! [`Reply::Failed`] is the driver host's last word before it exits.

use std::io::{self, Read, Write};
use std::time::Duration;

use host_linux::net::NetEvent;
use ntoskrnl::registry::RegValue;

use crate::net::NicInfo;

/// Largest message accepted (a batch of frames, or a start with the image and registry).
const MAX_MESSAGE: usize = 64 << 20;

/// What the adapter runs on in the driver host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A virtual miniport: no device.
    Virtual,
    /// The software device model `model` with MAC `mac`; its wire is the descriptor the manager
    /// passed as [`WIRE_FD`](super::WIRE_FD), or an in-process queue if `wire` is false.
    Model {
        model: String,
        mac: [u8; 6],
        wire: bool,
    },
}

/// Everything a driver host needs to start an adapter; it opens no file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartParams {
    pub arch: dbt::Arch,
    pub driver: crate::host::DriverFile,
    /// The registry key NdisOpenConfiguration reads (None: the service's Parameters key).
    pub config_key: Option<String>,
    /// The registry the driver may read: keys (absolute NT paths) with their values, parents
    /// before children.
    pub registry: crate::registry::store::Snapshot,
    pub backend: Backend,
    /// The kernel's watchdog limits.
    pub watchdog: ntoskrnl::Watchdog,
    /// Whether the verifier checks the driver.
    pub verifier: bool,
}

/// Manager -> driver host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Start the adapter (first message only); answered by [`Reply::Started`].
    Start(Box<StartParams>),
    /// Offer frames to the send path; answered by [`Reply::Sent`].
    Send(Vec<Vec<u8>>),
    /// Do pending work; answered by [`Reply::Events`].
    Service,
    /// Query the adapter's OIDs; answered by [`Reply::Info`].
    Info,
    /// Halt and unload; answered by [`Reply::Stopped`], then the driver host exits.
    Stop,
}

/// Where the data path stands, sent with every answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathState {
    /// Frames the miniport accepted and has not completed.
    pub in_flight: u64,
    /// When the driver host must be serviced again (its next guest timer), from now.
    pub deadline: Option<Duration>,
}

/// Driver host -> manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Started(NicInfo, PathState),
    /// How many of the offered frames (from the front) the miniport took.
    Sent(u32, PathState),
    Events(Vec<NetEvent>, PathState),
    Info(NicInfo, PathState),
    /// What the driver failed to release.
    Stopped(Vec<String>),
    /// The request failed: the full report (driver, guest address, registers, guest backtrace,
    /// last kernel calls); the driver host exits after sending it.
    Failed(String),
}

#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
    fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    fn opt_u64(&mut self, v: Option<u64>) -> &mut Self {
        match v {
            Some(v) => self.u8(1).u64(v),
            None => self.u8(0),
        }
    }
    fn opt_duration(&mut self, v: Option<Duration>) -> &mut Self {
        self.opt_u64(v.map(|d| d.as_micros().min(u128::from(u64::MAX)) as u64))
    }
    fn state(&mut self, s: &PathState) -> &mut Self {
        self.u64(s.in_flight).opt_duration(s.deadline)
    }
    fn info(&mut self, i: &NicInfo) -> &mut Self {
        self.str(&i.description);
        self.0.extend_from_slice(&i.permanent_address);
        self.0.extend_from_slice(&i.current_address);
        self.u8(i.link_up.into())
            .u64(i.link_speed)
            .u32(i.mtu)
            .u64(i.xmit_ok)
            .u64(i.rcv_ok)
            .u64(i.xmit_error)
            .u64(i.rcv_error)
            .u64(i.rcv_no_buffer)
    }
    fn strings(&mut self, v: &[String]) -> &mut Self {
        self.u32(v.len() as u32);
        for s in v {
            self.str(s);
        }
        self
    }
}

struct Dec<'a>(&'a [u8]);

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad message: {what}"))
}

impl Dec<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(bad("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| bad("u32"))?,
        ))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| bad("u64"))?,
        ))
    }
    fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?).map_err(|_| bad("string"))
    }
    fn mac(&mut self) -> io::Result<[u8; 6]> {
        self.take(6)?.try_into().map_err(|_| bad("mac"))
    }
    fn opt_u64(&mut self) -> io::Result<Option<u64>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            _ => Err(bad("option")),
        }
    }
    fn opt_duration(&mut self) -> io::Result<Option<Duration>> {
        Ok(self.opt_u64()?.map(Duration::from_micros))
    }
    fn state(&mut self) -> io::Result<PathState> {
        Ok(PathState {
            in_flight: self.u64()?,
            deadline: self.opt_duration()?,
        })
    }
    fn info(&mut self) -> io::Result<NicInfo> {
        Ok(NicInfo {
            description: self.str()?,
            permanent_address: self.mac()?,
            current_address: self.mac()?,
            link_up: self.u8()? != 0,
            link_speed: self.u64()?,
            mtu: self.u32()?,
            xmit_ok: self.u64()?,
            rcv_ok: self.u64()?,
            xmit_error: self.u64()?,
            rcv_error: self.u64()?,
            rcv_no_buffer: self.u64()?,
        })
    }
    fn list<T>(&mut self, mut one: impl FnMut(&mut Self) -> io::Result<T>) -> io::Result<Vec<T>> {
        let n = self.u32()? as usize;
        // Every element takes at least one byte: a count beyond the rest is malformed.
        if n > self.0.len() {
            return Err(bad("list length"));
        }
        (0..n).map(|_| one(self)).collect()
    }
    fn end(&self) -> io::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(bad("trailing bytes"))
        }
    }
}

fn arch_tag(a: dbt::Arch) -> u8 {
    match a {
        dbt::Arch::X86 => 0,
        dbt::Arch::X64 => 1,
    }
}

impl Request {
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        match self {
            Request::Start(p) => {
                e.u8(0).u8(arch_tag(p.arch)).str(&p.driver.name);
                e.bytes(&p.driver.bytes);
                match &p.config_key {
                    Some(k) => e.u8(1).str(k),
                    None => e.u8(0),
                };
                e.u32(p.registry.len() as u32);
                for (key, values) in &p.registry {
                    e.str(key).u32(values.len() as u32);
                    for (name, v) in values {
                        e.str(name).u32(v.kind).bytes(&v.data);
                    }
                }
                match &p.backend {
                    Backend::Virtual => e.u8(0),
                    Backend::Model { model, mac, wire } => {
                        e.u8(1).str(model);
                        e.0.extend_from_slice(mac);
                        e.u8((*wire).into())
                    }
                };
                let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
                e.opt_u64(ms(p.watchdog.call))
                    .opt_u64(ms(p.watchdog.raised))
                    .u8(p.verifier.into());
            }
            Request::Send(frames) => {
                e.u8(1).u32(frames.len() as u32);
                for f in frames {
                    e.bytes(f);
                }
            }
            Request::Service => {
                e.u8(2);
            }
            Request::Info => {
                e.u8(3);
            }
            Request::Stop => {
                e.u8(4);
            }
        }
        e.0
    }

    fn decode(b: &[u8]) -> io::Result<Request> {
        let mut d = Dec(b);
        let r = match d.u8()? {
            0 => {
                let arch = match d.u8()? {
                    0 => dbt::Arch::X86,
                    1 => dbt::Arch::X64,
                    _ => return Err(bad("arch")),
                };
                let driver = crate::host::DriverFile {
                    name: d.str()?,
                    bytes: d.bytes()?,
                };
                let config_key = match d.u8()? {
                    0 => None,
                    _ => Some(d.str()?),
                };
                let registry = d.list(|d| {
                    let key = d.str()?;
                    let values = d.list(|d| {
                        let name = d.str()?;
                        let kind = d.u32()?;
                        Ok((name, RegValue::new(kind, d.bytes()?)))
                    })?;
                    Ok((key, values))
                })?;
                let backend = match d.u8()? {
                    0 => Backend::Virtual,
                    _ => Backend::Model {
                        model: d.str()?,
                        mac: d.mac()?,
                        wire: d.u8()? != 0,
                    },
                };
                let ms = |v: Option<u64>| v.map(Duration::from_millis);
                let watchdog = ntoskrnl::Watchdog {
                    call: ms(d.opt_u64()?),
                    raised: ms(d.opt_u64()?),
                };
                let verifier = d.u8()? != 0;
                Request::Start(Box::new(StartParams {
                    arch,
                    driver,
                    config_key,
                    registry,
                    backend,
                    watchdog,
                    verifier,
                }))
            }
            1 => Request::Send(d.list(Dec::bytes)?),
            2 => Request::Service,
            3 => Request::Info,
            4 => Request::Stop,
            _ => return Err(bad("request tag")),
        };
        d.end()?;
        Ok(r)
    }
}

impl Reply {
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        match self {
            Reply::Started(info, s) => {
                e.u8(0).info(info).state(s);
            }
            Reply::Sent(n, s) => {
                e.u8(1).u32(*n).state(s);
            }
            Reply::Events(events, s) => {
                e.u8(2).u32(events.len() as u32);
                for ev in events {
                    match ev {
                        NetEvent::Receive(f) => e.u8(0).bytes(f),
                        NetEvent::Link(up) => e.u8(1).u8((*up).into()),
                    };
                }
                e.state(s);
            }
            Reply::Info(info, s) => {
                e.u8(3).info(info).state(s);
            }
            Reply::Stopped(findings) => {
                e.u8(4).strings(findings);
            }
            Reply::Failed(report) => {
                e.u8(5).str(report);
            }
        }
        e.0
    }

    fn decode(b: &[u8]) -> io::Result<Reply> {
        let mut d = Dec(b);
        let r = match d.u8()? {
            0 => Reply::Started(d.info()?, d.state()?),
            1 => Reply::Sent(d.u32()?, d.state()?),
            2 => {
                let events = d.list(|d| match d.u8()? {
                    0 => Ok(NetEvent::Receive(d.bytes()?)),
                    1 => Ok(NetEvent::Link(d.u8()? != 0)),
                    _ => Err(bad("event tag")),
                })?;
                Reply::Events(events, d.state()?)
            }
            3 => Reply::Info(d.info()?, d.state()?),
            4 => Reply::Stopped(d.list(Dec::str)?),
            5 => Reply::Failed(d.str()?),
            _ => return Err(bad("reply tag")),
        };
        d.end()?;
        Ok(r)
    }
}

fn write_message(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf)
}

/// Reads one message; `Ok(None)` at a clean end of stream (the peer is gone).
fn read_message(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(bad("too long"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

pub fn send_request(w: &mut impl Write, r: &Request) -> io::Result<()> {
    write_message(w, &r.encode())
}

pub fn send_reply(w: &mut impl Write, r: &Reply) -> io::Result<()> {
    write_message(w, &r.encode())
}

/// The next request; `Ok(None)` when the manager is gone.
pub fn recv_request(r: &mut impl Read) -> io::Result<Option<Request>> {
    read_message(r)?.map(|b| Request::decode(&b)).transpose()
}

/// The next reply; `Ok(None)` when the driver host is gone.
pub fn recv_reply(r: &mut impl Read) -> io::Result<Option<Reply>> {
    read_message(r)?.map(|b| Reply::decode(&b)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> NicInfo {
        NicInfo {
            description: "nic".into(),
            permanent_address: [2, 0, 0, 0, 0, 1],
            current_address: [2, 0, 0, 0, 0, 2],
            link_up: true,
            link_speed: 1_000_000_000,
            mtu: 1500,
            xmit_ok: 1,
            rcv_ok: 2,
            xmit_error: 3,
            rcv_error: 4,
            rcv_no_buffer: 5,
        }
    }

    #[test]
    fn messages_round_trip() {
        let state = PathState {
            in_flight: 3,
            deadline: Some(Duration::from_micros(1500)),
        };
        let requests = [
            Request::Start(Box::new(StartParams {
                arch: dbt::Arch::X86,
                driver: crate::host::DriverFile {
                    name: "a.sys".into(),
                    bytes: vec![1, 2, 3],
                },
                config_key: Some(r"\Registry\Machine\X".into()),
                registry: vec![(
                    r"\Registry\Machine\X".into(),
                    vec![("V".into(), RegValue::dword(7))],
                )],
                backend: Backend::Model {
                    model: "rtl8139".into(),
                    mac: [2, 1, 2, 3, 4, 5],
                    wire: true,
                },
                watchdog: ntoskrnl::Watchdog {
                    call: None,
                    raised: Some(Duration::from_millis(250)),
                },
                verifier: true,
            })),
            Request::Send(vec![vec![1; 60], vec![]]),
            Request::Service,
            Request::Info,
            Request::Stop,
        ];
        for r in requests {
            let mut buf = Vec::new();
            send_request(&mut buf, &r).unwrap();
            assert_eq!(recv_request(&mut buf.as_slice()).unwrap(), Some(r));
        }
        let replies = [
            Reply::Started(info(), state),
            Reply::Sent(7, PathState::default()),
            Reply::Events(
                vec![NetEvent::Link(false), NetEvent::Receive(vec![9; 64])],
                state,
            ),
            Reply::Info(info(), state),
            Reply::Stopped(vec!["leak".into()]),
            Reply::Failed("guest fault".into()),
        ];
        for r in replies {
            let mut buf = Vec::new();
            send_reply(&mut buf, &r).unwrap();
            assert_eq!(recv_reply(&mut buf.as_slice()).unwrap(), Some(r));
        }
        assert!(recv_reply(&mut [].as_slice()).unwrap().is_none());
        assert!(recv_reply(&mut [1, 0, 0, 0, 9].as_slice()).is_err());
    }
}
