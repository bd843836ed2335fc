//! The tokio transport shell around [`UserAgent`]: UDP and TCP sockets, the timer, and two
//! channels — commands in (answer, reject, hang up …) and call events out.
//!
//! One task owns the user agent and every socket write; TCP connections get a reader task
//! each that frames messages (by Content-Length) and forwards them. Nothing here interprets
//! SIP: it moves bytes and time in and out of the sans-IO core.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::framing::StreamFramer;
use crate::registrar::Registrar;
use crate::ua::{CallRef, Event, Outbound, Output, Peer, Stats, Transport, UaConfig, UserAgent};

/// What the application asks of a call.
#[derive(Debug)]
pub enum Command {
    Ring(CallRef),
    /// 183 Session Progress with our SDP: media before the answer.
    EarlyMedia {
        call: CallRef,
        sdp: Vec<u8>,
    },
    /// Replies whether the call could be answered (it may have been cancelled meanwhile).
    Answer {
        call: CallRef,
        sdp: Vec<u8>,
        done: tokio::sync::oneshot::Sender<bool>,
    },
    Reject {
        call: CallRef,
        code: u16,
        reason: String,
    },
    Hangup(CallRef),
    /// Reply with the user agent's counters.
    Stats(tokio::sync::oneshot::Sender<Stats>),
    /// Refuse new calls with 503 from now on.
    Drain,
    /// Hang up every call in progress.
    HangupAll,
    /// Reply with the number of calls in progress.
    ActiveCalls(tokio::sync::oneshot::Sender<usize>),
    /// Place an outbound call. Its events go to `events` (not to the main event channel);
    /// the reply is `None` when the target does not make a valid INVITE.
    Invite {
        out: Outbound,
        events: mpsc::UnboundedSender<Event>,
        reply: tokio::sync::oneshot::Sender<Option<CallRef>>,
    },
    /// Blind-transfer an answered call (REFER); replies whether the REFER went out. Its
    /// final response arrives as `Event::ReferAnswered`.
    Refer {
        call: CallRef,
        target: String,
        done: tokio::sync::oneshot::Sender<bool>,
    },
    /// Reply with where a registered user can be reached (contact URI, peer), best first.
    Lookup {
        user: String,
        reply: tokio::sync::oneshot::Sender<Vec<(String, Peer)>>,
    },
}

/// Sends commands to the SIP task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SipHandle {
    commands: mpsc::Sender<Command>,
}

impl SipHandle {
    /// Queues a command; `false` if the SIP task has stopped.
    pub async fn send(&self, command: Command) -> bool {
        self.commands.send(command).await.is_ok()
    }

    /// Calls in progress (0 if the SIP task has stopped).
    pub async fn active_calls(&self) -> usize {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.send(Command::ActiveCalls(tx)).await {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Places an outbound call whose events arrive on `events`; `None` if the SIP task has
    /// stopped or the target does not make a valid INVITE.
    pub async fn invite(
        &self,
        out: Outbound,
        events: mpsc::UnboundedSender<Event>,
    ) -> Option<CallRef> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if !self.send(Command::Invite { out, events, reply }).await {
            return None;
        }
        rx.await.ok().flatten()
    }

    /// Where a registered user can be reached, best first; empty if not registered.
    pub async fn lookup(&self, user: &str) -> Vec<(String, Peer)> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        if !self.send(Command::Lookup { user: user.to_owned(), reply }).await {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

/// Listening addresses.
#[derive(Debug, Clone)]
pub struct Listen {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
}

/// Bound sockets, ready to run.
#[derive(Debug)]
pub struct SipServer {
    udp: Option<Arc<UdpSocket>>,
    tcp: Option<TcpListener>,
    config: UaConfig,
    registrar: Option<Registrar>,
}

/// Inputs to the SIP task from connection readers.
enum Inbound {
    Frame(Peer, Vec<u8>),
    /// A reply the framer produced for a stream it must close (e.g. no Content-Length).
    Reply(SocketAddr, Vec<u8>),
    Connected(SocketAddr, mpsc::Sender<Vec<u8>>),
    Closed(SocketAddr),
}

impl SipServer {
    /// Binds the sockets (so the caller learns bind errors before starting).
    pub async fn bind(listen: &Listen, config: UaConfig) -> std::io::Result<SipServer> {
        let udp = match listen.udp {
            Some(addr) => Some(Arc::new(UdpSocket::bind(addr).await?)),
            None => None,
        };
        let tcp = match listen.tcp {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(SipServer { udp, tcp, config, registrar: None })
    }

    /// Serves REGISTER with `registrar`.
    pub fn with_registrar(mut self, registrar: Registrar) -> SipServer {
        self.registrar = Some(registrar);
        self
    }

    /// The bound UDP address (useful with port 0).
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// The bound TCP address.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// Starts the SIP task. Events arrive on the returned receiver.
    pub fn spawn(self) -> (SipHandle, mpsc::UnboundedReceiver<Event>) {
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        // Events are unbounded so the SIP task never waits on the application while the
        // application waits on a command to it (that pair of bounded channels can deadlock).
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::channel(1024);
        if let Some(listener) = self.tcp {
            tokio::spawn(accept_loop(listener, in_tx.clone()));
        }
        let mut ua = UserAgent::new(self.config);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        ua.set_clock(Instant::now(), unix);
        if let Some(registrar) = self.registrar {
            ua.set_registrar(registrar);
        }
        tokio::spawn(run(ua, self.udp, cmd_rx, ev_tx, in_rx, in_tx));
        (SipHandle { commands: cmd_tx }, ev_rx)
    }
}

async fn accept_loop(listener: TcpListener, inbound: mpsc::Sender<Inbound>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                tokio::spawn(connection(stream, addr, inbound.clone()));
            }
            Err(e) => {
                tracing::warn!("SIP TCP accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// One TCP connection: frames inbound messages, writes what the SIP task sends back.
async fn connection(stream: TcpStream, addr: SocketAddr, inbound: mpsc::Sender<Inbound>) {
    let (mut reader, mut writer) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    if inbound.send(Inbound::Connected(addr, out_tx)).await.is_err() {
        return;
    }
    let write = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let peer = Peer { addr, transport: Transport::Tcp };
    let mut framer = StreamFramer::default();
    let mut buf = vec![0u8; 16 * 1024];
    'read: loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        framer.push(&buf[..n]);
        while let Some(frame) = framer.next_bytes() {
            match frame {
                Ok(bytes) => {
                    if inbound.send(Inbound::Frame(peer, bytes)).await.is_err() {
                        break 'read;
                    }
                }
                Err(e) => {
                    if let Some(reply) = e.reply() {
                        let _ = inbound.send(Inbound::Reply(addr, reply)).await;
                    }
                    break 'read;
                }
            }
        }
    }
    // Let the writer flush what is queued (e.g. the 400 before a close): it ends once the
    // SIP task drops this connection's sender on `Closed`.
    let _ = inbound.send(Inbound::Closed(addr)).await;
    let _ = write.await;
}

async fn run(
    mut ua: UserAgent,
    udp: Option<Arc<UdpSocket>>,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    mut inbound: mpsc::Receiver<Inbound>,
    // Held so `inbound` never closes (and never busy-loops) when no TCP listener exists;
    // outbound connections report through it too.
    inbound_tx: mpsc::Sender<Inbound>,
) {
    let mut conns: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    // Outbound TCP connections being set up, with what waits to be sent on them.
    let mut connecting: HashMap<SocketAddr, Vec<Vec<u8>>> = HashMap::new();
    // Per-call event receivers (outbound calls); other events go to `events`.
    let mut sinks: HashMap<CallRef, mpsc::UnboundedSender<Event>> = HashMap::new();
    let mut buf = vec![0u8; 65_535];
    loop {
        let deadline = ua.poll_timeout();
        tokio::select! {
            r = recv(&udp, &mut buf) => {
                if let Some((n, addr)) = r {
                    ua.handle_input(Instant::now(), Peer { addr, transport: Transport::Udp }, &buf[..n]);
                }
            }
            msg = inbound.recv() => match msg {
                                Some(Inbound::Frame(peer, bytes)) => ua.handle_input(Instant::now(), peer, &bytes),
                Some(Inbound::Reply(addr, reply)) => {
                    if let Some(conn) = conns.get(&addr) {
                        let _ = conn.try_send(reply);
                    }
                }
                Some(Inbound::Connected(addr, tx)) => {
                    for bytes in connecting.remove(&addr).unwrap_or_default() {
                        let _ = tx.try_send(bytes);
                    }
                    conns.insert(addr, tx);
                }
                Some(Inbound::Closed(addr)) => {
                    conns.remove(&addr);
                    // A connect that failed: its transactions time out (408) on their own.
                    connecting.remove(&addr);
                }
                None => {}
            },
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                let now = Instant::now();
                match cmd {
                    Command::Ring(call) => ua.ring(now, call, None),
                    Command::EarlyMedia { call, sdp } => ua.ring(now, call, Some(&sdp)),
                    Command::Answer { call, sdp, done } => { let _ = done.send(ua.answer(now, call, &sdp)); }
                    Command::Reject { call, code, reason } => { ua.reject(now, call, code, &reason); }
                    Command::Hangup(call) => ua.hangup(now, call),
                    Command::Stats(reply) => { let _ = reply.send(ua.stats()); }
                    Command::Drain => ua.drain(),
                    Command::HangupAll => ua.hangup_all(now),
                    Command::ActiveCalls(reply) => { let _ = reply.send(ua.active_calls()); }
                    Command::Invite { out, events, reply } => {
                        let call = ua.invite(now, out);
                        if let Some(call) = call {
                            sinks.insert(call, events);
                        }
                        let _ = reply.send(call);
                    }
                    Command::Refer { call, target, done } => { let _ = done.send(ua.refer(now, call, &target)); }
                    Command::Lookup { user, reply } => { let _ = reply.send(ua.lookup(now, &user)); }
                }
            }
            _ = sleep_until(deadline) => ua.handle_timeout(Instant::now()),
        }
        while let Some(output) = ua.poll_output() {
            match output {
                Output::Transmit { to, bytes } => match to.transport {
                    Transport::Udp => {
                        if let Some(sock) = &udp
                            && let Err(e) = sock.send_to(&bytes, to.addr).await
                        {
                            tracing::debug!("SIP UDP send to {} failed: {e}", to.addr);
                        }
                    }
                    Transport::Tcp => match conns.get(&to.addr) {
                        // A peer that stops reading must not stall every other call: when
                        // its queue is full the connection is dropped.
                        Some(conn) => {
                            if conn.try_send(bytes).is_err() {
                                tracing::warn!("SIP TCP peer {} is not reading; closing", to.addr);
                                conns.remove(&to.addr);
                            }
                        }
                        // No connection (yet): open one (connection reuse: it then serves
                        // both directions, RFC 5923 style, for as long as it stays up).
                        None => match connecting.get_mut(&to.addr) {
                            Some(queue) => queue.push(bytes),
                            None => {
                                connecting.insert(to.addr, vec![bytes]);
                                tokio::spawn(connect(to.addr, inbound_tx.clone()));
                            }
                        },
                    },
                },
                Output::Event(event) => {
                    let call = event.call();
                    let sink = match sinks.get(&call) {
                        Some(sink) => {
                            let delivered = sink.send(event.clone()).is_ok();
                            if !delivered || event.is_final() {
                                sinks.remove(&call);
                            }
                            true
                        }
                        None => false,
                    };
                    if !sink && events.send(event).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Opens an outbound TCP connection; it joins the SIP task like an accepted one.
async fn connect(addr: SocketAddr, inbound: mpsc::Sender<Inbound>) {
    let attempt = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await;
    match attempt {
        Ok(Ok(stream)) => connection(stream, addr, inbound).await,
        Ok(Err(e)) => {
            tracing::info!("SIP TCP connect to {addr} failed: {e}");
            let _ = inbound.send(Inbound::Closed(addr)).await;
        }
        Err(_) => {
            tracing::info!("SIP TCP connect to {addr} timed out");
            let _ = inbound.send(Inbound::Closed(addr)).await;
        }
    }
}

async fn recv(udp: &Option<Arc<UdpSocket>>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match udp {
        Some(sock) => sock.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
