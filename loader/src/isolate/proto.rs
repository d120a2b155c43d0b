//! The manager <-> driver-host protocol over a Unix stream socket: every message is a 4-byte
//! little-endian length and that many bytes; the first byte is the message tag, then the fields in
//! order (integers little endian, byte strings and lists prefixed with a u32 count, strings UTF-8).
//! The manager sends a [`Request`], the driver host answers with one [`Reply`]; a
//! [`Reply::Failed`] is the driver host's last word before it exits.

use std::io::{self, Read, Write};
use std::time::Duration;

use host_linux::net::NetEvent;
use ntoskrnl::io::IoResult;
use ntoskrnl::registry::{RegError, RegValue};
use ntoskrnl::status::NtStatus;

use crate::host::DriverFile;
use crate::net::NicInfo;
use crate::registry::store::Snapshot;

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

/// A driver of a stack: its service name and its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceImage {
    pub service: String,
    pub file: DriverFile,
}

/// The driver stack a driver host runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stack {
    /// A network adapter: an NDIS miniport on `backend`, configured from `config_key` (None: the
    /// service's Parameters key).
    Nic {
        driver: DriverFile,
        config_key: Option<String>,
        backend: Backend,
    },
    /// A root-enumerated device: its drivers bottom to top (lower filters, function driver, upper
    /// filters; each loaded once), AddDevice of each on the PDO of `instance`, then
    /// IRP_MN_START_DEVICE.
    Device {
        instance: String,
        drivers: Vec<ServiceImage>,
    },
    /// Legacy (non-PnP) services: DriverEntry of each.
    Services(Vec<ServiceImage>),
    /// `ica-load run`: DriverEntry of one driver (service name: the file stem); a driver with
    /// AddDevice gets a root-enumerated device stack built and removed again.
    Run(DriverFile),
}

impl Stack {
    /// The driver files, in load order.
    pub fn files(&self) -> Vec<&DriverFile> {
        match self {
            Stack::Nic { driver, .. } | Stack::Run(driver) => vec![driver],
            Stack::Device { drivers, .. } | Stack::Services(drivers) => {
                drivers.iter().map(|d| &d.file).collect()
            }
        }
    }

    /// The driver file names, for messages (`a.sys, b.sys`).
    pub fn names(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for f in self.files() {
            if !names.contains(&f.name.as_str()) {
                names.push(&f.name);
            }
        }
        names.join(", ")
    }
}

/// Everything a driver host needs to start its stack; it opens no file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartParams {
    pub arch: dbt::Arch,
    pub stack: Stack,
    /// The registry the drivers may read: keys (absolute NT paths) with their values, parents
    /// before children (read by the manager at every start; writes go back to it).
    pub registry: Snapshot,
    /// The kernel's watchdog limits.
    pub watchdog: ntoskrnl::Watchdog,
    /// Whether the verifier checks the drivers.
    pub verifier: bool,
    /// The files the drivers may open (NdisOpenFile): NT path (`\SystemRoot\...`) and contents,
    /// read by the manager (the installed package's files).
    pub files: Vec<(String, Vec<u8>)>,
}

/// A registry write a driver made, forwarded by its driver host to the manager that owns the
/// registry (the [`RegistryBackend`](ntoskrnl::registry::RegistryBackend) calls that write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegWrite {
    CreateKey {
        path: String,
        class: String,
    },
    DeleteKey(String),
    SetValue {
        path: String,
        name: String,
        value: RegValue,
    },
    DeleteValue {
        path: String,
        name: String,
    },
}

/// The manager's answer to a [`RegWrite`]: what the backend call returns (`CreateKey`: whether
/// the key was created; `DeleteValue`: whether the value existed; otherwise false).
pub type RegOutcome = Result<bool, RegError>;

/// Manager -> driver host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Start the stack (first message only); answered by [`Reply::Started`] (a network adapter)
    /// or [`Reply::StackStarted`].
    Start(Box<StartParams>),
    /// Offer frames to the adapter's send path; answered by [`Reply::Sent`].
    Send(Vec<Vec<u8>>),
    /// Do pending work (an adapter's interrupts and indications; a stack's DPCs, due timers and
    /// work items); answered by [`Reply::Events`].
    Service,
    /// Query the adapter's OIDs; answered by [`Reply::Info`].
    Info,
    /// Open a device by name; answered by [`Reply::Opened`].
    Open(String),
    /// DeviceIoControl on a handle of the driver host; answered by [`Reply::Io`].
    Ioctl {
        handle: u32,
        code: u32,
        input: Vec<u8>,
        output: Vec<u8>,
    },
    /// ReadFile; answered by [`Reply::Io`].
    Read { handle: u32, len: u32 },
    /// WriteFile; answered by [`Reply::Io`].
    Write { handle: u32, data: Vec<u8> },
    /// CloseHandle; answered by [`Reply::Closed`].
    Close(u32),
    /// Execution statistics; answered by [`Reply::Stats`].
    Stats,
    /// Stop the stack (halt, remove, unload); answered by [`Reply::Stopped`], then the driver host
    /// exits.
    Stop,
    /// The answer to a [`Reply::RegistryWrite`].
    RegistryDone(RegOutcome),
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
    /// A device stack or services started: what happened, one line each (drivers loaded,
    /// AddDevice, START, devices and links created).
    StackStarted(Vec<String>, PathState),
    /// How many of the offered frames (from the front) the miniport took.
    Sent(u32, PathState),
    Events(Vec<NetEvent>, PathState),
    Info(NicInfo, PathState),
    /// A handle, or the IRP_MJ_CREATE failure.
    Opened(Result<u32, NtStatus>),
    Io(IoResult),
    /// The IRP_MJ_CLOSE status.
    Closed(NtStatus),
    /// Execution statistics, one line each.
    Stats(Vec<String>),
    /// What the stop did, one line each, and what the drivers failed to release (or the
    /// verifier found).
    Stopped {
        lines: Vec<String>,
        findings: Vec<String>,
    },
    /// The request failed: the full report (driver, guest address, registers, guest backtrace,
    /// last kernel calls); the driver host exits after sending it.
    Failed(String),
    /// Not an answer: a registry write of the drivers while the request runs. The manager applies
    /// it and sends [`Request::RegistryDone`]; the answer to the request comes later.
    RegistryWrite(RegWrite),
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

impl Enc {
    fn file(&mut self, f: &DriverFile) -> &mut Self {
        self.str(&f.name).bytes(&f.bytes)
    }
    fn images(&mut self, v: &[ServiceImage]) -> &mut Self {
        self.u32(v.len() as u32);
        for d in v {
            self.str(&d.service).file(&d.file);
        }
        self
    }
    fn value(&mut self, v: &RegValue) -> &mut Self {
        self.u32(v.kind).bytes(&v.data)
    }
    fn stack(&mut self, s: &Stack) -> &mut Self {
        match s {
            Stack::Nic {
                driver,
                config_key,
                backend,
            } => {
                self.u8(0).file(driver);
                match config_key {
                    Some(k) => self.u8(1).str(k),
                    None => self.u8(0),
                };
                match backend {
                    Backend::Virtual => self.u8(0),
                    Backend::Model { model, mac, wire } => {
                        self.u8(1).str(model);
                        self.0.extend_from_slice(mac);
                        self.u8((*wire).into())
                    }
                }
            }
            Stack::Device { instance, drivers } => self.u8(1).str(instance).images(drivers),
            Stack::Services(drivers) => self.u8(2).images(drivers),
            Stack::Run(driver) => self.u8(3).file(driver),
        }
    }
    fn reg_write(&mut self, w: &RegWrite) -> &mut Self {
        match w {
            RegWrite::CreateKey { path, class } => self.u8(0).str(path).str(class),
            RegWrite::DeleteKey(path) => self.u8(1).str(path),
            RegWrite::SetValue { path, name, value } => self.u8(2).str(path).str(name).value(value),
            RegWrite::DeleteValue { path, name } => self.u8(3).str(path).str(name),
        }
    }
    fn reg_outcome(&mut self, r: &RegOutcome) -> &mut Self {
        match r {
            Ok(b) => self.u8(0).u8((*b).into()),
            Err(RegError::NotFound(s)) => self.u8(1).str(s),
            Err(RegError::CannotDelete(s)) => self.u8(2).str(s),
            Err(RegError::AccessDenied(s)) => self.u8(3).str(s),
            Err(RegError::InvalidName(s)) => self.u8(4).str(s),
            Err(RegError::Storage(s)) => self.u8(5).str(s),
        }
    }
}

impl Dec<'_> {
    fn file(&mut self) -> io::Result<DriverFile> {
        Ok(DriverFile {
            name: self.str()?,
            bytes: self.bytes()?,
        })
    }
    fn images(&mut self) -> io::Result<Vec<ServiceImage>> {
        self.list(|d| {
            Ok(ServiceImage {
                service: d.str()?,
                file: d.file()?,
            })
        })
    }
    fn value(&mut self) -> io::Result<RegValue> {
        let kind = self.u32()?;
        Ok(RegValue::new(kind, self.bytes()?))
    }
    fn stack(&mut self) -> io::Result<Stack> {
        Ok(match self.u8()? {
            0 => {
                let driver = self.file()?;
                let config_key = match self.u8()? {
                    0 => None,
                    _ => Some(self.str()?),
                };
                let backend = match self.u8()? {
                    0 => Backend::Virtual,
                    _ => Backend::Model {
                        model: self.str()?,
                        mac: self.mac()?,
                        wire: self.u8()? != 0,
                    },
                };
                Stack::Nic {
                    driver,
                    config_key,
                    backend,
                }
            }
            1 => Stack::Device {
                instance: self.str()?,
                drivers: self.images()?,
            },
            2 => Stack::Services(self.images()?),
            3 => Stack::Run(self.file()?),
            _ => return Err(bad("stack tag")),
        })
    }
    fn reg_write(&mut self) -> io::Result<RegWrite> {
        Ok(match self.u8()? {
            0 => RegWrite::CreateKey {
                path: self.str()?,
                class: self.str()?,
            },
            1 => RegWrite::DeleteKey(self.str()?),
            2 => RegWrite::SetValue {
                path: self.str()?,
                name: self.str()?,
                value: self.value()?,
            },
            3 => RegWrite::DeleteValue {
                path: self.str()?,
                name: self.str()?,
            },
            _ => return Err(bad("registry write tag")),
        })
    }
    fn reg_outcome(&mut self) -> io::Result<RegOutcome> {
        Ok(match self.u8()? {
            0 => Ok(self.u8()? != 0),
            1 => Err(RegError::NotFound(self.str()?)),
            2 => Err(RegError::CannotDelete(self.str()?)),
            3 => Err(RegError::AccessDenied(self.str()?)),
            4 => Err(RegError::InvalidName(self.str()?)),
            5 => Err(RegError::Storage(self.str()?)),
            _ => return Err(bad("registry outcome tag")),
        })
    }
}

impl Request {
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        match self {
            Request::Start(p) => {
                e.u8(0).u8(arch_tag(p.arch)).stack(&p.stack);
                e.u32(p.registry.len() as u32);
                for (key, values) in &p.registry {
                    e.str(key).u32(values.len() as u32);
                    for (name, v) in values {
                        e.str(name).value(v);
                    }
                }
                let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
                e.opt_u64(ms(p.watchdog.call))
                    .opt_u64(ms(p.watchdog.raised))
                    .u8(p.verifier.into());
                e.u32(p.files.len() as u32);
                for (path, bytes) in &p.files {
                    e.str(path).bytes(bytes);
                }
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
            Request::Open(path) => {
                e.u8(5).str(path);
            }
            Request::Ioctl {
                handle,
                code,
                input,
                output,
            } => {
                e.u8(6).u32(*handle).u32(*code).bytes(input).bytes(output);
            }
            Request::Read { handle, len } => {
                e.u8(7).u32(*handle).u32(*len);
            }
            Request::Write { handle, data } => {
                e.u8(8).u32(*handle).bytes(data);
            }
            Request::Close(handle) => {
                e.u8(9).u32(*handle);
            }
            Request::Stats => {
                e.u8(10);
            }
            Request::RegistryDone(r) => {
                e.u8(11).reg_outcome(r);
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
                let stack = d.stack()?;
                let registry = d.list(|d| {
                    let key = d.str()?;
                    let values = d.list(|d| Ok((d.str()?, d.value()?)))?;
                    Ok((key, values))
                })?;
                let ms = |v: Option<u64>| v.map(Duration::from_millis);
                let watchdog = ntoskrnl::Watchdog {
                    call: ms(d.opt_u64()?),
                    raised: ms(d.opt_u64()?),
                };
                let verifier = d.u8()? != 0;
                let files = d.list(|d| Ok((d.str()?, d.bytes()?)))?;
                Request::Start(Box::new(StartParams {
                    arch,
                    stack,
                    registry,
                    watchdog,
                    verifier,
                    files,
                }))
            }
            1 => Request::Send(d.list(Dec::bytes)?),
            2 => Request::Service,
            3 => Request::Info,
            4 => Request::Stop,
            5 => Request::Open(d.str()?),
            6 => Request::Ioctl {
                handle: d.u32()?,
                code: d.u32()?,
                input: d.bytes()?,
                output: d.bytes()?,
            },
            7 => Request::Read {
                handle: d.u32()?,
                len: d.u32()?,
            },
            8 => Request::Write {
                handle: d.u32()?,
                data: d.bytes()?,
            },
            9 => Request::Close(d.u32()?),
            10 => Request::Stats,
            11 => Request::RegistryDone(d.reg_outcome()?),
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
            Reply::Stopped { lines, findings } => {
                e.u8(4).strings(lines).strings(findings);
            }
            Reply::Failed(report) => {
                e.u8(5).str(report);
            }
            Reply::StackStarted(lines, s) => {
                e.u8(6).strings(lines).state(s);
            }
            Reply::Opened(r) => {
                match r {
                    Ok(h) => e.u8(7).u8(0).u32(*h),
                    Err(st) => e.u8(7).u8(1).u32(*st),
                };
            }
            Reply::Io(r) => {
                e.u8(8).u32(r.status).u64(r.information).bytes(&r.output);
            }
            Reply::Closed(st) => {
                e.u8(9).u32(*st);
            }
            Reply::Stats(lines) => {
                e.u8(10).strings(lines);
            }
            Reply::RegistryWrite(w) => {
                e.u8(11).reg_write(w);
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
            4 => Reply::Stopped {
                lines: d.list(Dec::str)?,
                findings: d.list(Dec::str)?,
            },
            5 => Reply::Failed(d.str()?),
            6 => Reply::StackStarted(d.list(Dec::str)?, d.state()?),
            7 => Reply::Opened(match d.u8()? {
                0 => Ok(d.u32()?),
                _ => Err(d.u32()?),
            }),
            8 => Reply::Io(IoResult {
                status: d.u32()?,
                information: d.u64()?,
                output: d.bytes()?,
            }),
            9 => Reply::Closed(d.u32()?),
            10 => Reply::Stats(d.list(Dec::str)?),
            11 => Reply::RegistryWrite(d.reg_write()?),
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
        let file = |name: &str| DriverFile {
            name: name.into(),
            bytes: vec![1, 2, 3],
        };
        let image = |service: &str| ServiceImage {
            service: service.into(),
            file: file("s.sys"),
        };
        let start = |stack| {
            Request::Start(Box::new(StartParams {
                arch: dbt::Arch::X86,
                stack,
                registry: vec![(
                    r"\Registry\Machine\X".into(),
                    vec![("V".into(), RegValue::dword(7))],
                )],
                watchdog: ntoskrnl::Watchdog {
                    call: None,
                    raised: Some(Duration::from_millis(250)),
                },
                verifier: true,
                files: vec![(r"\SystemRoot\system32\drivers\fw.bin".into(), vec![1, 2, 3])],
            }))
        };
        let requests = [
            start(Stack::Nic {
                driver: file("a.sys"),
                config_key: Some(r"\Registry\Machine\X".into()),
                backend: Backend::Model {
                    model: "rtl8139".into(),
                    mac: [2, 1, 2, 3, 4, 5],
                    wire: true,
                },
            }),
            start(Stack::Nic {
                driver: file("a.sys"),
                config_key: None,
                backend: Backend::Virtual,
            }),
            start(Stack::Device {
                instance: r"ROOT\X\0000".into(),
                drivers: vec![image("Lower"), image("Function")],
            }),
            start(Stack::Services(vec![image("One")])),
            start(Stack::Run(file("r.sys"))),
            Request::Send(vec![vec![1; 60], vec![]]),
            Request::Service,
            Request::Info,
            Request::Stop,
            Request::Open(r"\\.\IcaNull".into()),
            Request::Ioctl {
                handle: 4,
                code: 0x0022_2C00,
                input: vec![1],
                output: vec![0; 4],
            },
            Request::Read { handle: 4, len: 64 },
            Request::Write {
                handle: 4,
                data: b"x".to_vec(),
            },
            Request::Close(4),
            Request::Stats,
            Request::RegistryDone(Ok(true)),
            Request::RegistryDone(Err(RegError::AccessDenied("k".into()))),
            Request::RegistryDone(Err(RegError::Storage("disk".into()))),
        ];
        for r in requests {
            let mut buf = Vec::new();
            send_request(&mut buf, &r).unwrap();
            assert_eq!(recv_request(&mut buf.as_slice()).unwrap(), Some(r));
        }
        let replies = [
            Reply::Started(info(), state),
            Reply::StackStarted(vec!["IcaNull: loaded".into()], state),
            Reply::Sent(7, PathState::default()),
            Reply::Events(
                vec![NetEvent::Link(false), NetEvent::Receive(vec![9; 64])],
                state,
            ),
            Reply::Info(info(), state),
            Reply::Opened(Ok(8)),
            Reply::Opened(Err(0xC000_0034)),
            Reply::Io(IoResult {
                status: 0,
                information: 3,
                output: vec![1, 2, 3],
            }),
            Reply::Closed(0),
            Reply::Stats(vec!["guest instructions executed: 1".into()]),
            Reply::Stopped {
                lines: vec!["unloaded".into()],
                findings: vec!["leak".into()],
            },
            Reply::Failed("guest fault".into()),
            Reply::RegistryWrite(RegWrite::CreateKey {
                path: r"\Registry\Machine\X\Y".into(),
                class: "c".into(),
            }),
            Reply::RegistryWrite(RegWrite::DeleteKey(r"\Registry\Machine\X\Y".into())),
            Reply::RegistryWrite(RegWrite::SetValue {
                path: r"\Registry\Machine\X".into(),
                name: "V".into(),
                value: RegValue::sz("s"),
            }),
            Reply::RegistryWrite(RegWrite::DeleteValue {
                path: r"\Registry\Machine\X".into(),
                name: "V".into(),
            }),
        ];
        for r in replies {
            let mut buf = Vec::new();
            send_reply(&mut buf, &r).unwrap();
            assert_eq!(recv_reply(&mut buf.as_slice()).unwrap(), Some(r));
        }
        assert!(recv_reply(&mut [].as_slice()).unwrap().is_none());
        assert!(recv_reply(&mut [1, 0, 0, 0, 99].as_slice()).is_err());
    }
}
