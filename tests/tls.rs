//! TLS on listeners and connectors (rustls): plaintext to the handler, ALPN and SNI in
//! `Secured`, resumption, `close_notify`; bad input, a stalled handshake, a wrong certificate,
//! a truncated stream and a handshake flood each end the connection with a counted reason.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::eventually;
use ringstage::net::tls::{rustls, TlsInfo};
use ringstage::net::ConnectConfig;
use ringstage::prelude::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A self-signed certificate for `localhost`, its key, and a client config that trusts it
/// (ALPN `echo/1`).
fn certs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.alpn_protocols = vec![b"echo/1".to_vec()];
    server.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"echo/1".to_vec()];
    (Arc::new(server), Arc::new(client))
}

#[derive(Debug)]
enum Seen {
    Opened,
    Connected,
    Secured(TlsInfo),
    Data(Vec<u8>),
    Eof,
    Closed,
    ConnectFailed(String),
}

/// A TLS echo server on `cfg` (and a connector with `connect`'s TLS, driven by the returned
/// injector), its events reported on the channel. The echo closes on `Eof`.
fn server(
    cfg: ListenConfig,
    connect: ConnectConfig,
) -> (Runtime, SocketAddr, mpsc::Receiver<Seen>, Injector<SocketAddr>) {
    let mut b = Runtime::builder(1).cpus([]);
    let app = b.stage::<NetEvent>("app", StageConfig::on([0]));
    let ctl = b.stage::<SocketAddr>("ctl", StageConfig::on([0]));
    let (net, l) = b.listen(cfg, app);
    let (_, connector) = b.connector(connect, app);
    let (tx, rx) = mpsc::channel();
    b.handler(app, move |s| {
        let tx = tx.clone();
        let mut net = Outbox::with_waker(s.sink(net), s.waker(app));
        // The connector's own connections: what they receive is reported, not echoed.
        let mut outbound = std::collections::HashSet::new();
        handler_fn(move |ev: NetEvent, _cx: &mut Context<'_>| {
            let seen = match ev {
                NetEvent::Opened { .. } => Seen::Opened,
                NetEvent::Connected { conn, .. } => {
                    outbound.insert(conn);
                    net.send(NetCmd::Send { conn, data: IoBuf::from_static(b"ping") });
                    Seen::Connected
                }
                NetEvent::Secured { info, .. } => Seen::Secured(*info),
                NetEvent::Data { conn, data } => {
                    if !outbound.contains(&conn) {
                        net.send(NetCmd::Send { conn, data: data.clone() });
                    }
                    Seen::Data(data.to_vec())
                }
                NetEvent::Eof { conn } => {
                    net.send(NetCmd::Close { conn });
                    Seen::Eof
                }
                NetEvent::Closed { .. } => Seen::Closed,
                NetEvent::ConnectFailed { error, .. } => Seen::ConnectFailed(error.to_string()),
                _ => return,
            };
            let _ = tx.send(seen);
        })
    });
    b.handler(ctl, move |s| {
        let net = s.sink(net);
        handler_fn(move |addr: SocketAddr, cx: &mut Context<'_>| {
            let _ = net.try_enqueue(NetCmd::Connect { connector, addr, worker: cx.worker(), tag: 7 });
        })
    });
    let rt = b.start().expect("runtime starts");
    let addr = rt.local_addr(l);
    let inject = rt.injector(ctl);
    (rt, addr, rx, inject)
}

fn next(rx: &mpsc::Receiver<Seen>) -> Seen {
    rx.recv_timeout(Duration::from_secs(10)).expect("an event within 10 s")
}

fn tls_client(
    cfg: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(cfg.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

fn worker(rt: &Runtime) -> ringstage::metrics::WorkerSnapshot {
    rt.metrics().workers[0].clone()
}

#[test]
fn a_tls_echo_speaks_plaintext_to_the_handler_resumes_and_closes_with_close_notify() {
    let (server_cfg, client_cfg) = certs();
    let (rt, addr, rx, _) =
        server(ListenConfig::new("127.0.0.1:0".parse().unwrap(), [0]).tls(server_cfg), ConnectConfig::new());
    for round in 0..2 {
        let mut s = tls_client(&client_cfg, addr);
        // Larger than a record and than a receive buffer: many records each way.
        let msg: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + round) as u8).collect();
        s.write_all(&msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert!(got == msg, "round {round}: the echo came back whole");
        assert!(matches!(next(&rx), Seen::Opened));
        let Seen::Secured(info) = next(&rx) else { panic!("Secured follows Opened") };
        assert_eq!(info.alpn.as_deref(), Some(&b"echo/1"[..]));
        assert_eq!(info.server_name.as_deref(), Some("localhost"));
        assert_eq!(info.version, Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(info.resumed, round == 1, "the second connection resumes the first's session");
        let mut plain = 0;
        while plain < msg.len() {
            match next(&rx) {
                Seen::Data(d) => plain += d.len(),
                other => panic!("only plaintext Data before the close: {other:?}"),
            }
        }
        assert_eq!(plain, msg.len(), "the handler saw the plaintext, no more");
        // The client's close_notify is the handler's Eof; its Close sends close_notify back,
        // so the client reads a clean end of stream (not an unexpected EOF).
        s.conn.send_close_notify();
        s.flush().unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("a clean TLS close");
        assert!(rest.is_empty());
        assert!(matches!(next(&rx), Seen::Eof));
        assert!(matches!(next(&rx), Seen::Closed));
    }
    assert_eq!(worker(&rt).tls_handshakes, 2);
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn garbage_a_stall_and_a_truncated_stream_end_connections_with_counted_reasons() {
    let (server_cfg, client_cfg) = certs();
    let cfg = ListenConfig::new("127.0.0.1:0".parse().unwrap(), [0])
        .tls(server_cfg)
        .tls_handshake_timeout(Duration::from_millis(300));
    let (rt, addr, rx, _) = server(cfg, ConnectConfig::new());

    // Garbage instead of a ClientHello: an alert, then the close; the handler hears nothing.
    let mut g = TcpStream::connect(addr).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    g.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    let _ = g.read_to_end(&mut reply);
    assert_eq!(reply.first(), Some(&21), "a TLS alert record comes back: {reply:?}");
    eventually("the failure is counted", Duration::from_secs(10), || worker(&rt).tls_handshake_failed == 1);

    // A record header announcing more than a record may hold (2^14 + 256): refused the same way.
    let mut big = TcpStream::connect(addr).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    big.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00]).unwrap();
    let mut reply = Vec::new();
    let _ = big.read_to_end(&mut reply);
    assert_eq!(reply.first(), Some(&21), "an alert: {reply:?}");
    eventually("the failure is counted", Duration::from_secs(10), || worker(&rt).tls_handshake_failed == 2);

    // A client that connects and says nothing: cut at the handshake timeout.
    let mut stall = TcpStream::connect(addr).unwrap();
    stall.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = std::time::Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(stall.read(&mut buf).unwrap_or(0), 0, "closed");
    assert!(t.elapsed() < Duration::from_secs(3), "cut after {:?}", t.elapsed());
    eventually("the timeout is counted", Duration::from_secs(10), || worker(&rt).tls_handshake_timeouts == 1);

    // A peer that ends the stream without close_notify after its data: the data is
    // delivered, but no Eof: the connection is closed and counted.
    let mut s = tls_client(&client_cfg, addr);
    s.write_all(b"partial").unwrap();
    let mut got = [0u8; 7];
    s.read_exact(&mut got).unwrap();
    s.sock.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(matches!(next(&rx), Seen::Opened));
    assert!(matches!(next(&rx), Seen::Secured(_)));
    assert!(matches!(next(&rx), Seen::Data(d) if d == b"partial"));
    assert!(matches!(next(&rx), Seen::Closed), "closed without an Eof");
    assert_eq!(worker(&rt).tls_truncated, 1);
    assert!(rx.try_recv().is_err(), "the garbage and the stall never reached the handler");
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn a_connector_speaks_tls_and_refuses_a_certificate_for_another_name() {
    let (server_cfg, client_cfg) = certs();
    let listen = ListenConfig::new("127.0.0.1:0".parse().unwrap(), [0]).tls(server_cfg.clone());
    let good = ConnectConfig::new().tls(client_cfg.clone(), ServerName::try_from("localhost").unwrap());
    let (rt, addr, rx, connect) = server(listen, good);
    connect.try_enqueue(addr).ok().unwrap();
    // Both ends of the loopback pair, in some order; the connector sends "ping", the
    // listener's side echoes it, the connector's side receives it.
    let mut seen = Vec::new();
    while seen.iter().filter(|s| matches!(s, Seen::Data(d) if d == b"ping")).count() < 2 {
        seen.push(next(&rx));
    }
    assert!(seen.iter().any(|s| matches!(s, Seen::Connected)));
    let infos: Vec<_> = seen.iter().filter_map(|s| if let Seen::Secured(i) = s { Some(i) } else { None }).collect();
    assert_eq!(infos.len(), 2, "both ends are secured");
    assert!(infos.iter().all(|i| i.alpn.as_deref() == Some(&b"echo/1"[..])));
    rt.shutdown();
    rt.join().unwrap();

    // The same server's certificate names localhost; a connector expecting another name
    // refuses it: ConnectFailed saying so, and the handler never hears Connected.
    let listen = ListenConfig::new("127.0.0.1:0".parse().unwrap(), [0]).tls(server_cfg);
    let wrong = ConnectConfig::new().tls(client_cfg, ServerName::try_from("other.example").unwrap());
    let (rt, addr, rx, connect) = server(listen, wrong);
    connect.try_enqueue(addr).ok().unwrap();
    let failed = loop {
        match next(&rx) {
            Seen::ConnectFailed(e) => break e,
            Seen::Connected => panic!("an untrusted server is not connected"),
            _ => {}
        }
    };
    assert!(failed.contains("TLS") && failed.to_lowercase().contains("certificate"), "{failed}");
    eventually("counted", Duration::from_secs(10), || worker(&rt).tls_handshake_failed >= 1);
    rt.shutdown();
    rt.join().unwrap();
}

#[test]
fn a_handshake_flood_past_the_rate_is_refused_at_accept() {
    let (server_cfg, client_cfg) = certs();
    let cfg = ListenConfig::new("127.0.0.1:0".parse().unwrap(), [0]).tls(server_cfg).tls_handshakes_per_sec(2);
    let (rt, addr, _rx, _) = server(cfg, ConnectConfig::new());
    let mut ok = 0;
    for _ in 0..6 {
        let mut s = tls_client(&client_cfg, addr);
        if s.write_all(b"x").is_ok() && s.read(&mut [0u8; 1]).is_ok_and(|n| n == 1) {
            ok += 1;
        }
    }
    let w = worker(&rt);
    assert!(w.tls_handshakes_refused >= 3, "refused {}", w.tls_handshakes_refused);
    assert!((2..=3).contains(&ok), "{ok} handshakes got through");
    rt.shutdown();
    rt.join().unwrap();
}
