//! Opening devices from config (simulated mode), the TCP transport, and reconnection after
//! the device went away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use drivers::config::{open_fingerprint_sensor, open_idcard_reader};
use drivers::idcard::{IdCardError, IdCardReader, SamReader, SamSettings};
use drivers::link::TcpConnector;
use firmware_interfaces::sam::CardLayout;
use firmware_interfaces::sim::{SamSimulator, fixtures};
use kiosk_config::SerialDeviceSection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn simulated_mode_from_default_config() {
    let section = SerialDeviceSection::default();
    let mut opened = open_idcard_reader(&section).expect("simulated reader");
    let sim = opened
        .simulator
        .as_ref()
        .expect("simulated mode has a handle");
    sim.present_card(fixtures::card(fixtures::hk_macao_taiwan_text(3), 3));
    let read = opened.reader.read_card().await.expect("read");
    assert_eq!(read.text.layout(), CardLayout::HkMacaoTaiwan);
    let mut fp = open_fingerprint_sensor(&section).expect("simulated sensor");
    assert_eq!(fp.sensor.info().await.expect("info").capacity, 200);
    assert!(fp.simulator.is_some());
}

/// A serial server stand-in: each accepted connection is served by the shared simulator
/// until `close_after` replies have been sent on it, then dropped.
async fn serial_server(sim: Arc<Mutex<SamSimulator>>, close_after: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let sim = Arc::clone(&sim);
            let close_after = Arc::clone(&close_after);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut replies = 0;
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let out = sim.lock().expect("lock").on_bytes(&buf[..n]);
                    if !out.is_empty() {
                        replies += 1;
                        if conn.write_all(&out).await.is_err()
                            || replies >= close_after.load(Ordering::SeqCst)
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn reads_over_tcp_and_reconnects_after_the_device_went_away() {
    let sim = Arc::new(Mutex::new(SamSimulator::new()));
    // The first connection dies after 3 replies (status probe, find, select): the read fails
    // with DeviceGone. Then the server behaves, and the next operation reconnects.
    let close_after = Arc::new(AtomicUsize::new(3));
    let addr = serial_server(Arc::clone(&sim), Arc::clone(&close_after)).await;
    let mut reader = SamReader::new(TcpConnector::new(addr), SamSettings::default());
    sim.lock()
        .expect("lock")
        .present_card(fixtures::card(fixtures::resident_text(8), 8));
    match reader.read_card().await {
        Err(IdCardError::DeviceGone(_)) => {}
        other => panic!("expected DeviceGone, got {other:?}"),
    }
    close_after.store(usize::MAX, Ordering::SeqCst);
    sim.lock()
        .expect("lock")
        .present_card(fixtures::card(fixtures::resident_text(8), 8));
    let read = reader.read_card().await.expect("read after reconnecting");
    assert_eq!(read.text, fixtures::resident_text(8));
}

#[tokio::test]
async fn full_read_over_tcp() {
    let sim = Arc::new(Mutex::new(SamSimulator::new()));
    let addr = serial_server(Arc::clone(&sim), Arc::new(AtomicUsize::new(usize::MAX))).await;
    let mut reader = SamReader::new(TcpConnector::new(addr), SamSettings::default());
    sim.lock()
        .expect("lock")
        .present_card(fixtures::card(fixtures::foreign_2017_text(2), 2));
    let read = reader.read_card().await.expect("read over tcp");
    assert_eq!(read.text.layout(), CardLayout::ForeignPermanent2017);
    assert_eq!(reader.baud(), None);
}
