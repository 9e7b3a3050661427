//! The continued record layer against rustls itself: a rustls client and server in memory, the
//! server's secrets extracted mid-stream, and the rustls client reading and writing through the
//! layer, for each version and suite the gateway's rustls configuration allows.

use std::io::{Read, Write};
use std::sync::Arc;

use proptest::prelude::*;
use rustls::crypto::ring as provider;
use rustls::{ClientConnection, ServerConnection};

use super::*;

#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    provider::default_provider()
}

/// TLS 1.3 and the ECDSA TLS 1.2 suites (the test certificate is ECDSA P-256).
fn suites() -> Vec<(rustls::SupportedCipherSuite, TlsProtocol, TlsSuite)> {
    use provider::cipher_suite::*;
    vec![
        (
            TLS13_AES_128_GCM_SHA256,
            TlsProtocol::Tls13,
            TlsSuite::Aes128Gcm,
        ),
        (
            TLS13_AES_256_GCM_SHA384,
            TlsProtocol::Tls13,
            TlsSuite::Aes256Gcm,
        ),
        (
            TLS13_CHACHA20_POLY1305_SHA256,
            TlsProtocol::Tls13,
            TlsSuite::Chacha20Poly1305,
        ),
        (
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            TlsProtocol::Tls12,
            TlsSuite::Aes128Gcm,
        ),
        (
            TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            TlsProtocol::Tls12,
            TlsSuite::Aes256Gcm,
        ),
        (
            TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            TlsProtocol::Tls12,
            TlsSuite::Chacha20Poly1305,
        ),
    ]
}

/// A handshaken client/server pair limited to `suite`, both allowing secret extraction.
fn pair(suite: rustls::SupportedCipherSuite) -> (ClientConnection, ServerConnection) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![suite],
        ..ring_provider()
    });
    let versions: &[&rustls::SupportedProtocolVersion] = match suite {
        rustls::SupportedCipherSuite::Tls13(_) => &[&rustls::version::TLS13],
        rustls::SupportedCipherSuite::Tls12(_) => &[&rustls::version::TLS12],
    };
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    server.enable_secret_extraction = true;
    server.send_tls13_tickets = 0;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).expect("root");
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.enable_secret_extraction = true;
    let mut client =
        ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap()).expect("client");
    let mut server = ServerConnection::new(Arc::new(server)).expect("server");
    for _ in 0..10 {
        let to_server = wire(&mut client);
        deliver(&mut server, &to_server);
        let to_client = wire(&mut server);
        deliver(&mut client, &to_client);
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());
    (client, server)
}

/// What `conn` has to send.
fn wire<D>(conn: &mut rustls::ConnectionCommon<D>) -> Vec<u8> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write_tls");
    }
    out
}

/// Gives `bytes` to `conn` and lets it process them.
fn deliver<D>(conn: &mut rustls::ConnectionCommon<D>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        conn.read_tls(&mut bytes).expect("read_tls");
        conn.process_new_packets().expect("process");
    }
}

/// Gives `bytes` to `conn` and returns the plaintext, read as it comes (rustls bounds what it
/// keeps unread).
fn deliver_reading<D>(conn: &mut rustls::ConnectionCommon<D>, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in bytes.chunks(4096) {
        deliver(conn, chunk);
        out.extend(plaintext(conn));
    }
    out
}

/// What `conn` decrypted and nobody read yet.
fn plaintext<D>(conn: &mut rustls::ConnectionCommon<D>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.reader().read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return out,
            Err(error) => panic!("{error}"),
        }
    }
}

/// Opens every whole record in `buf` with `layer`, returns their plaintext and leaves the
/// incomplete rest in `buf`.
fn open_all(layer: &mut RecordLayer, buf: &mut Vec<u8>) -> Result<(Vec<u8>, bool), RecordError> {
    let mut out = Vec::new();
    loop {
        match layer.open(buf)? {
            Opened::Incomplete => return Ok((out, false)),
            Opened::CloseNotify => return Ok((out, true)),
            Opened::Data {
                consumed,
                plaintext,
            } => {
                out.extend_from_slice(&buf[plaintext]);
                buf.drain(..consumed);
            }
        }
    }
}

/// The server's layer after extraction, with `cut` bytes of the client's next record delivered
/// to rustls before it (so they are carried as ciphertext), and what the client sent after.
struct Continued {
    client: ClientConnection,
    layer: RecordLayer,
    /// What the client sent that the layer has not seen yet.
    inbound: Vec<u8>,
    /// The carry the layer was made from.
    carry: TlsCarry,
}

fn continued(suite: rustls::SupportedCipherSuite, cut: usize) -> Continued {
    let (mut client, mut server) = pair(suite);
    // Some traffic through rustls both ways first: sequence numbers are not zero.
    client.writer().write_all(b"8=FIX.4.4|35=A|").unwrap();
    let bytes = wire(&mut client);
    deliver(&mut server, &bytes);
    assert_eq!(plaintext(&mut server), b"8=FIX.4.4|35=A|");
    server.writer().write_all(b"8=FIX.4.4|35=A|ack|").unwrap();
    let bytes = wire(&mut server);
    deliver(&mut client, &bytes);
    assert_eq!(plaintext(&mut client), b"8=FIX.4.4|35=A|ack|");
    // Decrypted by rustls but not read yet: carried as plaintext.
    client.writer().write_all(b"unread|").unwrap();
    let bytes = wire(&mut client);
    deliver(&mut server, &bytes);
    // Cut in the middle of a record: rustls holds the first part undecrypted.
    client.writer().write_all(b"35=D|order one|").unwrap();
    let mut next = wire(&mut client);
    let cut = cut.min(next.len());
    let mut first = &next[..cut];
    if !first.is_empty() {
        server.read_tls(&mut first).unwrap();
        server.process_new_packets().unwrap();
    }
    let version = server.protocol_version().expect("version");
    let mut read = [0u8; 64];
    let n = server.reader().read(&mut read).unwrap_or(0);
    let unread = read[..n].to_vec();
    // A whole record rustls decrypted is not ciphertext any more (its plaintext is read above).
    let ciphertext = if cut == next.len() {
        Vec::new()
    } else {
        next[..cut].to_vec()
    };
    let secrets = server.dangerous_extract_secrets().expect("extract");
    let carry = TlsCarry::from_rustls(version, secrets, &ciphertext, &unread).expect("carry");
    let layer = RecordLayer::new(&carry).expect("layer");
    let mut inbound = carry.ciphertext().unwrap();
    inbound.extend_from_slice(&next.split_off(cut));
    if cut > 0 && ciphertext.is_empty() {
        inbound.clear();
    }
    Continued {
        client,
        layer,
        inbound,
        carry,
    }
}

#[test]
fn a_rustls_client_reads_and_writes_through_the_continued_layer_for_every_suite() {
    for (suite, protocol, aead) in suites() {
        let mut c = continued(suite, 7);
        assert_eq!(
            (c.carry.protocol, c.carry.suite),
            (protocol, aead),
            "{suite:?}"
        );
        assert_eq!(c.carry.plaintext().unwrap(), b"unread|");
        let (got, closed) = open_all(&mut c.layer, &mut c.inbound).expect("opens");
        assert_eq!(
            (got.as_slice(), closed),
            (&b"35=D|order one|"[..], false),
            "{suite:?}"
        );
        // Gateway → client, larger than one record.
        let big: Vec<u8> = (0..40_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut out = Vec::new();
        c.layer.seal_data(b"35=8|report|", &mut out).unwrap();
        c.layer.seal_data(&big, &mut out).unwrap();
        let got = deliver_reading(&mut c.client, &out);
        let mut expected = b"35=8|report|".to_vec();
        expected.extend_from_slice(&big);
        assert_eq!(got, expected, "{suite:?}");
        // A second hand-over: the layer's own state carried again.
        c.client.writer().write_all(b"35=D|order two|").unwrap();
        let half = wire(&mut c.client);
        let (first, rest) = half.split_at(3);
        let again = c.layer.carry(first, b"");
        let mut layer = RecordLayer::new(&again).expect("carried again");
        let mut inbound = again.ciphertext().unwrap();
        inbound.extend_from_slice(rest);
        let (got, _) = open_all(&mut layer, &mut inbound).unwrap();
        assert_eq!(got, b"35=D|order two|", "{suite:?}");
        let mut out = Vec::new();
        layer.seal_data(b"35=8|two|", &mut out).unwrap();
        // Closure both ways.
        layer.seal_close_notify(&mut out);
        deliver(&mut c.client, &out);
        assert_eq!(plaintext(&mut c.client), b"35=8|two|");
        let mut buf = [0u8; 8];
        assert_eq!(c.client.reader().read(&mut buf).unwrap(), 0, "clean end");
        c.client.send_close_notify();
        let mut bytes = wire(&mut c.client);
        assert_eq!(
            open_all(&mut layer, &mut bytes).unwrap(),
            (Vec::new(), true)
        );
    }
}

#[test]
fn nothing_cut_and_a_whole_record_cut_both_continue() {
    for (suite, _, _) in suites() {
        for cut in [0, 1, 4, 5, 6, usize::MAX] {
            let mut c = continued(suite, cut);
            let (got, _) = open_all(&mut c.layer, &mut c.inbound).expect("opens");
            if cut == usize::MAX {
                // rustls decrypted the whole record: it is carried as plaintext instead.
                assert!(got.is_empty());
            } else {
                assert_eq!(got, b"35=D|order one|", "{suite:?} cut {cut}");
            }
        }
    }
}

#[test]
fn records_cut_at_every_byte_boundary_open_once_whole() {
    for (suite, _, _) in suites() {
        let mut c = continued(suite, 0);
        c.client.writer().write_all(b"first|").unwrap();
        c.client.writer().write_all(&[b'x'; 300]).unwrap();
        c.inbound.extend(wire(&mut c.client));
        let stream = c.inbound.clone();
        let carry = c.carry.clone();
        for split in 0..=stream.len() {
            let mut layer = RecordLayer::new(&carry).unwrap();
            let mut buf = stream[..split].to_vec();
            let (mut got, _) = open_all(&mut layer, &mut buf).expect("a prefix opens or waits");
            buf.extend_from_slice(&stream[split..]);
            got.extend(open_all(&mut layer, &mut buf).expect("whole").0);
            assert!(buf.is_empty());
            let mut expected = b"35=D|order one|first|".to_vec();
            expected.extend_from_slice(&[b'x'; 300]);
            assert_eq!(got, expected, "{suite:?} split {split}");
        }
    }
}

#[test]
fn a_corrupted_record_is_an_error_with_an_alert_never_a_wrong_record() {
    for (suite, _, _) in suites() {
        let c = continued(suite, 0);
        for at in 0..c.inbound.len() {
            let mut layer = RecordLayer::new(&c.carry).unwrap();
            let mut buf = c.inbound.clone();
            buf[at] ^= 0x40;
            match open_all(&mut layer, &mut buf) {
                Err(error) => {
                    let alert = error.alert();
                    assert!(alert.is_some(), "{error}");
                }
                // A flipped length can make the record look incomplete; never other data.
                Ok((got, closed)) => assert!(got.is_empty() && !closed, "{suite:?} at {at}"),
            }
        }
    }
}

#[test]
fn a_tls13_key_update_closes_cleanly_and_the_client_sees_close_notify() {
    for (suite, protocol, _) in suites() {
        if protocol != TlsProtocol::Tls13 {
            continue;
        }
        let mut c = continued(suite, 0);
        open_all(&mut c.layer, &mut c.inbound).unwrap();
        c.client.refresh_traffic_keys().expect("key update");
        let mut bytes = wire(&mut c.client);
        let error = open_all(&mut c.layer, &mut bytes).unwrap_err();
        assert_eq!(error, RecordError::KeyUpdate);
        let mut out = Vec::new();
        c.layer.seal_alert(error.alert().unwrap(), &mut out);
        deliver(&mut c.client, &out);
        let mut buf = [0u8; 8];
        assert_eq!(c.client.reader().read(&mut buf).unwrap(), 0);
    }
}

/// The client's side of the same connection.
fn swapped(carry: &TlsCarry) -> TlsCarry {
    let mut peer = carry.clone();
    peer.rx = carry.tx.clone();
    peer.tx = carry.rx.clone();
    peer
}

#[test]
fn handshake_messages_and_peer_alerts_end_the_connection() {
    for (suite, protocol, _) in suites() {
        let c = continued(suite, 0);
        // The client's side of the same connection, to write what a rustls client would not.
        let mut peer = RecordLayer::new(&swapped(&c.carry)).unwrap();
        let mut server = RecordLayer::new(&c.carry).unwrap();
        let mut buf = c.inbound.clone();
        open_all(&mut server, &mut buf).unwrap();
        // A ClientHello (renegotiation) or a NewSessionTicket-like message.
        let mut out = Vec::new();
        peer.tx.seq = server.rx.seq;
        peer.seal(CONTENT_HANDSHAKE, &[1, 0, 0, 0], &mut out)
            .unwrap();
        assert_eq!(
            open_all(&mut server, &mut out).unwrap_err(),
            RecordError::UnexpectedMessage(CONTENT_HANDSHAKE),
            "{protocol:?}"
        );
        let mut server = RecordLayer::new(&c.carry).unwrap();
        let mut peer = RecordLayer::new(&swapped(&c.carry)).unwrap();
        let mut out = Vec::new();
        peer.seal(
            CONTENT_ALERT,
            &[ALERT_LEVEL_WARNING, ALERT_USER_CANCELED],
            &mut out,
        )
        .unwrap();
        peer.seal(CONTENT_ALERT, &[ALERT_LEVEL_FATAL, 40], &mut out)
            .unwrap();
        // The carried ciphertext first, to keep sequence numbers in step.
        let mut buf = c.inbound.clone();
        buf.extend_from_slice(&out);
        peer.rx.seq = 0;
        let error = open_all(&mut server, &mut buf);
        assert!(
            matches!(
                error,
                Err(RecordError::PeerAlert(40)) | Err(RecordError::BadRecordMac)
            ),
            "{error:?}"
        );
    }
}

#[test]
fn a_carry_of_another_version_or_with_wrong_keys_is_refused_and_shows_no_key() {
    let (suite, _, _) = suites()[0];
    let c = continued(suite, 0);
    let text = format!("{:?}", c.carry);
    assert!(
        !text.contains(&c.carry.rx.key_hex) && !text.contains(&c.carry.tx.key_hex),
        "{text}"
    );
    let mut newer = c.carry.clone();
    newer.version = constants::TLS_CARRY_VERSION + 1;
    assert!(matches!(
        RecordLayer::new(&newer),
        Err(RecordError::Unsupported(_))
    ));
    let mut short = c.carry.clone();
    short.rx.key_hex.truncate(10);
    assert!(matches!(
        RecordLayer::new(&short),
        Err(RecordError::Unsupported(_))
    ));
    let mut not_hex = c.carry.clone();
    not_hex.tx.iv_hex = "zz".repeat(12);
    assert!(matches!(
        RecordLayer::new(&not_hex),
        Err(RecordError::Unsupported(_))
    ));
}

#[test]
fn an_over_long_record_is_refused_before_it_is_buffered() {
    let (suite, _, _) = suites()[0];
    let c = continued(suite, 0);
    let mut layer = RecordLayer::new(&c.carry).unwrap();
    let len = (constants::TLS13_CIPHERTEXT_MAX + 1) as u16;
    let mut header = vec![CONTENT_APPLICATION_DATA, 3, 3];
    header.extend_from_slice(&len.to_be_bytes());
    assert_eq!(layer.open(&mut header), Err(RecordError::RecordOverflow));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever bytes arrive, the layer answers with data it authenticated, a wait, or an error.
    #[test]
    fn any_bytes_open_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), tls12 in any::<bool>()) {
        let carry = TlsCarry {
            version: constants::TLS_CARRY_VERSION,
            protocol: if tls12 { TlsProtocol::Tls12 } else { TlsProtocol::Tls13 },
            suite: TlsSuite::Aes128Gcm,
            rx: DirectionCarry { key_hex: "11".repeat(16), iv_hex: "22".repeat(12), seq: 3 },
            tx: DirectionCarry { key_hex: "33".repeat(16), iv_hex: "44".repeat(12), seq: 5 },
            ciphertext_hex: String::new(),
            plaintext_hex: String::new(),
        };
        let mut layer = RecordLayer::new(&carry).unwrap();
        let mut buf = bytes.clone();
        let opened = layer.open(&mut buf);
        let authenticated = matches!(opened, Ok(Opened::Data { .. }) | Ok(Opened::CloseNotify));
        prop_assert!(!authenticated);
    }
}
