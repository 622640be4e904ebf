//! The TLS-to-HTTP boundary: the first bytes a peer sends to a TLS port, fed to a rustls server
//! session configured as tickcast configures it (`tls::server_config`, a fixture certificate),
//! and whatever plaintext comes out handed to the upgrade parser, as the shard driver does.
//!
//! Checks, besides "never panics": plain HTTP or garbage is refused by TLS (no plaintext comes
//! out of a session whose handshake never completed).

#![no_main]

use std::io::Read;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tickcast::proto::handshake::{HandshakeLimits, parse_request};
use tickcast::tls::{CertStore, server_config};

fn config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
            let store = CertStore::load(&dir.join("cert.pem"), &dir.join("key.pem"))
                .expect("fixture certificate");
            server_config(Arc::new(store)).expect("config")
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut conn = rustls::ServerConnection::new(config()).expect("session");
    let mut rest = data;
    let mut plain = Vec::new();
    while !rest.is_empty() {
        if conn.read_tls(&mut rest).is_err() {
            return;
        }
        let Ok(state) = conn.process_new_packets() else {
            // Refused: the driver sends the alert and closes.
            let mut out = Vec::new();
            let _ = conn.write_tls(&mut out);
            return;
        };
        let mut buf = vec![0u8; state.plaintext_bytes_to_read()];
        if !buf.is_empty() {
            conn.reader().read_exact(&mut buf).expect("announced plaintext");
            plain.extend_from_slice(&buf);
        }
    }
    if !plain.is_empty() {
        // Without a handshake (a fuzzer cannot forge one) no application data can come out.
        assert!(!conn.is_handshaking(), "plaintext before the handshake ended");
        let _ = parse_request(&plain, &HandshakeLimits::default());
    }
});
