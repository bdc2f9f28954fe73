//! The real serial driver against the simulators over real pseudo-terminals.

use std::time::Duration;

use drivers::fingerprint::{
    Ef01Sensor, Ef01Settings, FingerprintError, FingerprintSensor, VerifyOutcome,
};
use drivers::idcard::{IdCardError, IdCardReader, SamReader, SamSettings};
use drivers::link::SerialConnector;
use drivers::sim::{spawn_fingerprint_pty, spawn_idcard_pty};
use firmware_interfaces::sam::{CardLayout, SamBaud};
use firmware_interfaces::sim::{FingerQuality, SimFinger, fixtures};

fn reader(path: &std::path::Path, baud: Option<u32>) -> SamReader<SerialConnector> {
    SamReader::new(
        SerialConnector::new(path, 115_200),
        SamSettings {
            baud,
            ..SamSettings::default()
        },
    )
}

#[tokio::test]
async fn reads_all_four_layouts_at_115200() {
    let sim = spawn_idcard_pty(SamBaud::B115200).expect("pty");
    let mut r = reader(sim.path(), Some(115_200));
    let layouts = [
        CardLayout::Resident,
        CardLayout::HkMacaoTaiwan,
        CardLayout::ForeignPermanent2017,
        CardLayout::ForeignPermanent2023,
    ];
    for (card, layout) in fixtures::all_layouts(42).into_iter().zip(layouts) {
        let expected = card.text.clone();
        sim.present_card(card);
        let read = r.read_card().await.expect("card read");
        assert_eq!(read.text.layout(), layout);
        assert_eq!(read.text, expected);
        assert_eq!(read.data.photo.expose().len(), 1024);
        assert_eq!(read.data.fingerprints.len(), 2);
        // Same card left on the reader: no new find.
        assert!(matches!(r.read_card().await, Err(IdCardError::NoCard)));
    }
    assert_eq!(r.baud(), Some(115_200));
}

#[tokio::test]
async fn card_pulled_mid_read_is_card_removed_then_no_card() {
    let sim = spawn_idcard_pty(SamBaud::B115200).expect("pty");
    let mut r = reader(sim.path(), Some(115_200));
    assert!(matches!(r.read_card().await, Err(IdCardError::NoCard)));
    sim.present_card(fixtures::card(fixtures::resident_text(1), 1));
    sim.with(|s| s.faults.remove_card_during_next_read = true);
    assert!(matches!(r.read_card().await, Err(IdCardError::CardRemoved)));
    assert!(matches!(r.read_card().await, Err(IdCardError::NoCard)));
}

#[tokio::test]
async fn probe_finds_a_module_at_9600() {
    let sim = spawn_idcard_pty(SamBaud::B9600).expect("pty");
    let mut r = reader(sim.path(), None);
    r.check().await.expect("probe succeeds");
    assert_eq!(r.baud(), Some(9600));
    sim.present_card(fixtures::card(fixtures::resident_text(5), 5));
    let read = r.read_card().await.expect("read at 9600");
    assert_eq!(read.text.layout(), CardLayout::Resident);
}

#[tokio::test]
async fn silent_device_and_corrupt_reply_are_typed_errors() {
    let sim = spawn_idcard_pty(SamBaud::B115200).expect("pty");
    sim.with(|s| s.faults.silent = true);
    let mut r = SamReader::new(
        SerialConnector::new(sim.path(), 115_200),
        SamSettings {
            probe_timeout: Duration::from_millis(50),
            ..SamSettings::default()
        },
    );
    match r.check().await {
        Err(IdCardError::NoResponse { device, tried }) => {
            assert!(device.contains(&sim.path().display().to_string()));
            assert!(
                tried.contains("115200") && tried.contains("9600"),
                "{tried}"
            );
        }
        other => panic!("expected NoResponse, got {other:?}"),
    }
    sim.with(|s| s.faults.silent = false);
    r.check().await.expect("answers now");
    sim.with(|s| {
        s.faults.corrupt_next_reply = true;
        s.faults.garbage_before_next_reply = vec![0xAA, 0x00];
    });
    assert!(matches!(r.check().await, Err(IdCardError::Checksum)));
    r.check().await.expect("recovers after a corrupt reply");
}

#[tokio::test]
async fn cancelled_read_does_not_poison_the_next_one() {
    let sim = spawn_idcard_pty(SamBaud::B115200).expect("pty");
    let mut r = reader(sim.path(), Some(115_200));
    r.check().await.expect("connect");
    sim.present_card(fixtures::card(fixtures::resident_text(9), 9));
    // Start a read and drop it while the 2321-byte reply (~200 ms at 115200) is in flight.
    let _ = tokio::time::timeout(Duration::from_millis(60), r.read_card()).await;
    sim.present_card(fixtures::card(fixtures::resident_text(10), 10));
    let read = r.read_card().await.expect("read after cancellation");
    assert_eq!(read.text, fixtures::resident_text(10));
}

fn sensor(path: &std::path::Path) -> Ef01Sensor<SerialConnector> {
    Ef01Sensor::new(
        SerialConnector::new(path, 57_600),
        Ef01Settings {
            finger_timeout: Duration::from_secs(3),
            ..Ef01Settings::default()
        },
    )
}

#[tokio::test]
async fn enroll_and_verify_a_finger() {
    let sim = spawn_fingerprint_pty(50, 6).expect("pty");
    let mut s = sensor(sim.path());
    let info = s.info().await.expect("info");
    assert_eq!(
        (
            info.capacity,
            info.packet_size,
            info.baud,
            info.stored_templates
        ),
        (50, 128, 57_600, 0)
    );
    sim.place_finger(SimFinger {
        seed: 77,
        quality: FingerQuality::Good,
    });
    let slot = s.enroll(None).await.expect("enroll");
    assert_eq!(slot, 0);
    assert!(matches!(
        s.verify(slot).await,
        Ok(VerifyOutcome::Match { .. })
    ));
    assert_eq!(
        s.identify().await.expect("identify").map(|(p, _)| p),
        Some(0)
    );
    sim.place_finger(SimFinger {
        seed: 78,
        quality: FingerQuality::Good,
    });
    assert_eq!(
        s.verify(slot).await.expect("verify"),
        VerifyOutcome::NoMatch
    );
    assert_eq!(s.identify().await.expect("identify"), None);
    assert_eq!(s.info().await.expect("info").stored_templates, 1);
}

#[tokio::test]
async fn fingerprint_faults_are_typed() {
    let sim = spawn_fingerprint_pty(1, 12).expect("pty");
    let mut s = Ef01Sensor::new(
        SerialConnector::new(sim.path(), 57_600),
        Ef01Settings {
            finger_timeout: Duration::from_millis(200),
            ..Ef01Settings::default()
        },
    );
    // Module at 115200: found by the probe; no finger: NoFinger.
    assert!(matches!(
        s.enroll(None).await,
        Err(FingerprintError::NoFinger(_))
    ));
    assert_eq!(s.info().await.expect("info").baud, 115_200);
    sim.place_finger(SimFinger {
        seed: 1,
        quality: FingerQuality::Poor,
    });
    assert!(matches!(
        s.enroll(None).await,
        Err(FingerprintError::PoorImage(_))
    ));
    sim.place_finger(SimFinger {
        seed: 2,
        quality: FingerQuality::Good,
    });
    assert_eq!(s.enroll(None).await.expect("first slot"), 0);
    assert!(matches!(
        s.enroll(None).await,
        Err(FingerprintError::LibraryFull)
    ));
}

#[tokio::test]
async fn image_upload_reassembles_over_an_in_memory_link() {
    use drivers::link::OnceConnector;
    use firmware_interfaces::ef01::PacketSize;
    use firmware_interfaces::sim::Ef01Simulator;
    use std::sync::{Arc, Mutex};
    let sim = Arc::new(Mutex::new(Ef01Simulator::new(10)));
    sim.lock().expect("lock").set_packet_size(PacketSize::B32);
    let link = drivers::sim::spawn_in_memory(Arc::clone(&sim));
    let mut s = Ef01Sensor::new(
        OnceConnector::new(link, "in-memory"),
        Ef01Settings::default(),
    );
    assert_eq!(s.info().await.expect("info").packet_size, 32);
    sim.lock().expect("lock").place_finger(SimFinger {
        seed: 3,
        quality: FingerQuality::Good,
    });
    let img = s.capture_image().await.expect("image from 1152 packets");
    assert_eq!(
        (img.width, img.height, img.pixels.len()),
        (256, 288, 256 * 288)
    );
}

/// A module that answers the image upload with an endless stream of non-data packets must not
/// hold the kiosk for ever: the per-packet deadline was renewed by every packet, data or not.
#[tokio::test]
async fn image_upload_ends_when_a_device_chatters_without_data() {
    use drivers::link::OnceConnector;
    use firmware_interfaces::ef01::{Confirmation, DEFAULT_ADDRESS, Instruction, encode_ack};
    use firmware_interfaces::sim::Ef01Simulator;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sim = Ef01Simulator::new(10);
    sim.place_finger(SimFinger {
        seed: 3,
        quality: FingerQuality::Good,
    });
    let (host, mut device) = tokio::io::duplex(64 * 1024);
    let up_image = Instruction::UpImage.encode(DEFAULT_ADDRESS);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match device.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if buf[..n] == up_image[..] {
                // Acknowledge the upload, then chatter: an ack every 50 ms, never any data.
                let ack = encode_ack(DEFAULT_ADDRESS, Confirmation::Ok, &[]);
                loop {
                    if device.write_all(&ack).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            if device.write_all(&sim.on_bytes(&buf[..n])).await.is_err() {
                return;
            }
        }
    });
    let mut s = Ef01Sensor::new(
        OnceConnector::new(host, "in-memory"),
        Ef01Settings {
            command_timeout: Duration::from_millis(300),
            ..Ef01Settings::default()
        },
    );
    let outcome = tokio::time::timeout(Duration::from_secs(10), s.capture_image())
        .await
        .expect("the upload ends although the device keeps sending");
    assert!(
        matches!(outcome, Err(FingerprintError::Timeout { .. })),
        "{outcome:?}"
    );
}
