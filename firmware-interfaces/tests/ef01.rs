//! EF01 protocol: simulator behaviour driven by the codec, property tests.

use firmware_interfaces::ef01::*;
use firmware_interfaces::framing::FrameAssembler;
use firmware_interfaces::sim::{Ef01Simulator, FingerQuality, SimFinger};
use proptest::prelude::*;

fn packets(bytes: &[u8]) -> Vec<Packet> {
    let mut d = Ef01Deframer::new();
    d.push(bytes);
    std::iter::from_fn(|| d.next_frame())
        .map(|r| r.expect("valid packet"))
        .collect()
}

fn ask(sim: &mut Ef01Simulator, ins: Instruction) -> Result<AckData, InstructionError> {
    let out = packets(&sim.on_bytes(&ins.encode(DEFAULT_ADDRESS)));
    let ack = out.first().expect("an ack");
    assert_eq!(ack.kind, PacketKind::Ack);
    ins.decode_ack(&ack.payload)
}

fn conf(e: Result<AckData, InstructionError>) -> Confirmation {
    match e {
        Ok(_) => Confirmation::Ok,
        Err(InstructionError::Confirmation(c)) => c,
        Err(other) => panic!("{other}"),
    }
}

fn unlocked(capacity: u16) -> Ef01Simulator {
    let mut sim = Ef01Simulator::new(capacity);
    assert_eq!(
        conf(ask(&mut sim, Instruction::GenImg)),
        Confirmation::PasswordRequired
    );
    assert_eq!(
        conf(ask(&mut sim, Instruction::VfyPwd { password: 1 })),
        Confirmation::WrongPassword
    );
    assert_eq!(
        conf(ask(&mut sim, Instruction::VfyPwd { password: 0 })),
        Confirmation::Ok
    );
    sim
}

fn enroll(sim: &mut Ef01Simulator, page: u16) -> Confirmation {
    for buffer in [1, 2] {
        assert_eq!(conf(ask(sim, Instruction::GenImg)), Confirmation::Ok);
        let c = conf(ask(sim, Instruction::Img2Tz { buffer }));
        if c != Confirmation::Ok {
            return c;
        }
        // The tapping finger reads as lifted once.
        assert_eq!(conf(ask(sim, Instruction::GenImg)), Confirmation::NoFinger);
    }
    assert_eq!(conf(ask(sim, Instruction::RegModel)), Confirmation::Ok);
    conf(ask(sim, Instruction::Store { buffer: 1, page }))
}

#[test]
fn parameters_are_read_not_assumed() {
    let mut sim = unlocked(200);
    sim.set_packet_size(PacketSize::B32);
    let Ok(AckData::Parameters(p)) = ask(&mut sim, Instruction::ReadSysPara) else {
        panic!()
    };
    assert_eq!(
        (p.capacity, p.packet_size, p.baud(), p.system_id),
        (200, PacketSize::B32, 57_600, 9)
    );
    assert_eq!(p.status_register & 0b100, 0b100, "password verified bit");
    assert_eq!(
        conf(ask(
            &mut sim,
            Instruction::SetSysPara {
                register: 6,
                value: 3
            }
        )),
        Confirmation::Ok
    );
    assert_eq!(
        conf(ask(
            &mut sim,
            Instruction::SetSysPara {
                register: 9,
                value: 1
            }
        )),
        Confirmation::InvalidRegister
    );
    assert_eq!(
        conf(ask(
            &mut sim,
            Instruction::SetSysPara {
                register: 5,
                value: 9
            }
        )),
        Confirmation::BadRegisterConfig
    );
    assert_eq!(sim.params().packet_size, PacketSize::B256);
}

#[test]
fn enroll_match_search_and_library_full() {
    let mut sim = unlocked(2);
    assert_eq!(
        conf(ask(&mut sim, Instruction::GenImg)),
        Confirmation::NoFinger
    );
    sim.place_finger(SimFinger {
        seed: 11,
        quality: FingerQuality::Good,
    });
    assert_eq!(enroll(&mut sim, 0), Confirmation::Ok);
    assert_eq!(
        ask(&mut sim, Instruction::TemplateCount),
        Ok(AckData::Count(1))
    );
    let Ok(AckData::IndexTable(t)) = ask(&mut sim, Instruction::ReadIndexTable { page: 0 }) else {
        panic!()
    };
    assert_eq!(t[0], 0b01);
    // Same finger: 1:1 match and 1:N search.
    assert_eq!(conf(ask(&mut sim, Instruction::GenImg)), Confirmation::Ok);
    assert_eq!(
        conf(ask(&mut sim, Instruction::Img2Tz { buffer: 1 })),
        Confirmation::Ok
    );
    assert_eq!(
        conf(ask(&mut sim, Instruction::LoadChar { buffer: 2, page: 0 })),
        Confirmation::Ok
    );
    assert!(matches!(ask(&mut sim, Instruction::Match), Ok(AckData::Score(s)) if s > 0));
    assert!(matches!(
        ask(
            &mut sim,
            Instruction::Search {
                buffer: 1,
                start: 0,
                count: 2
            }
        ),
        Ok(AckData::Found { page: 0, .. })
    ));
    // Another finger: no match, not found.
    sim.place_finger(SimFinger {
        seed: 12,
        quality: FingerQuality::Good,
    });
    assert_eq!(conf(ask(&mut sim, Instruction::GenImg)), Confirmation::Ok);
    assert_eq!(
        conf(ask(&mut sim, Instruction::Img2Tz { buffer: 1 })),
        Confirmation::Ok
    );
    assert_eq!(
        conf(ask(&mut sim, Instruction::Match)),
        Confirmation::NoMatch
    );
    assert_eq!(
        conf(ask(
            &mut sim,
            Instruction::Search {
                buffer: 1,
                start: 0,
                count: 2
            }
        )),
        Confirmation::NotFound
    );
    assert_eq!(
        conf(ask(&mut sim, Instruction::LoadChar { buffer: 2, page: 1 })),
        Confirmation::TemplateReadError
    );
    // Library of 2: slot 2 is beyond it.
    assert_eq!(
        conf(ask(&mut sim, Instruction::GenImg)),
        Confirmation::NoFinger
    );
    assert_eq!(enroll(&mut sim, 2), Confirmation::BadLocation);
    // Poor finger.
    sim.place_finger(SimFinger {
        seed: 13,
        quality: FingerQuality::Poor,
    });
    assert_eq!(enroll(&mut sim, 1), Confirmation::TooFewFeatures);
    assert_eq!(
        conf(ask(&mut sim, Instruction::DeleteChar { page: 0, count: 1 })),
        Confirmation::Ok
    );
    assert_eq!(conf(ask(&mut sim, Instruction::Empty)), Confirmation::Ok);
    assert_eq!(
        ask(&mut sim, Instruction::TemplateCount),
        Ok(AckData::Count(0))
    );
}

#[test]
fn up_image_is_288_packets_at_128_bytes_and_reassembles() {
    let mut sim = unlocked(10);
    sim.place_finger(SimFinger {
        seed: 5,
        quality: FingerQuality::Good,
    });
    assert_eq!(conf(ask(&mut sim, Instruction::GenImg)), Confirmation::Ok);
    let out = packets(&sim.on_bytes(&Instruction::UpImage.encode(DEFAULT_ADDRESS)));
    assert_eq!(out.len(), 1 + 288);
    assert_eq!(out[0].payload.as_slice(), &[0x00]);
    assert!(
        out[1..288]
            .iter()
            .all(|p| p.kind == PacketKind::Data && p.payload.len() == 128)
    );
    assert_eq!(out[288].kind, PacketKind::EndData);
    let packed: Vec<u8> = out[1..]
        .iter()
        .flat_map(|p| p.payload.iter().copied())
        .collect();
    let img = FingerImage::unpack(&packed).expect("36864 bytes");
    assert_eq!(
        (img.width, img.height, img.pixels.len()),
        (256, 288, 256 * 288)
    );
}

#[test]
fn up_and_down_char_round_trip() {
    let mut sim = unlocked(10);
    sim.place_finger(SimFinger {
        seed: 5,
        quality: FingerQuality::Good,
    });
    assert_eq!(enroll(&mut sim, 3), Confirmation::Ok);
    let out = packets(&sim.on_bytes(&Instruction::UpChar { buffer: 1 }.encode(DEFAULT_ADDRESS)));
    let template: Vec<u8> = out[1..]
        .iter()
        .flat_map(|p| p.payload.iter().copied())
        .collect();
    assert_eq!(template.len(), 512);
    // Download it into buffer 2 in 128-byte packets, then match against a fresh capture.
    assert_eq!(
        conf(ask(&mut sim, Instruction::DownChar { buffer: 2 })),
        Confirmation::Ok
    );
    for (i, chunk) in template.chunks(128).enumerate() {
        let kind = if i == 3 {
            PacketKind::EndData
        } else {
            PacketKind::Data
        };
        assert!(
            sim.on_bytes(&encode_packet(DEFAULT_ADDRESS, kind, chunk))
                .is_empty()
        );
    }
    assert_eq!(conf(ask(&mut sim, Instruction::GenImg)), Confirmation::Ok);
    assert_eq!(
        conf(ask(&mut sim, Instruction::Img2Tz { buffer: 1 })),
        Confirmation::Ok
    );
    assert!(matches!(
        ask(&mut sim, Instruction::Match),
        Ok(AckData::Score(_))
    ));
}

#[test]
fn faults_checksum_unknown_other_address_silent() {
    let mut sim = unlocked(10);
    let mut bad = Instruction::GenImg.encode(DEFAULT_ADDRESS);
    if let Some(l) = bad.last_mut() {
        *l ^= 1;
    }
    assert_eq!(packets(&sim.on_bytes(&bad))[0].payload.as_slice(), &[0x01]);
    let unknown = encode_packet(DEFAULT_ADDRESS, PacketKind::Command, &[0x77]);
    assert_eq!(
        packets(&sim.on_bytes(&unknown))[0].payload.as_slice(),
        &[0x19]
    );
    assert!(
        sim.on_bytes(&Instruction::GenImg.encode(0x1234_5678))
            .is_empty()
    );
    // Split writes with garbage in front.
    let mut stream = vec![0x00, 0xEF];
    stream.extend(Instruction::HandShake.encode(DEFAULT_ADDRESS));
    let out: Vec<u8> = stream.chunks(2).flat_map(|c| sim.on_bytes(c)).collect();
    assert_eq!(packets(&out).len(), 1);
    sim.silent = true;
    assert!(
        sim.on_bytes(&Instruction::HandShake.encode(DEFAULT_ADDRESS))
            .is_empty()
    );
}

proptest! {
    #[test]
    fn packets_round_trip_with_garbage_and_splits(
        payload in proptest::collection::vec(any::<u8>(), 1..300),
        address in any::<u32>(),
        garbage in proptest::collection::vec(any::<u8>(), 0..40),
        split in 1usize..50,
    ) {
        let mut stream: Vec<u8> = garbage.into_iter().filter(|b| *b != 0xEF).collect();
        stream.extend(encode_packet(address, PacketKind::Data, &payload));
        let mut d = Ef01Deframer::new();
        let mut got = Vec::new();
        for c in stream.chunks(split) {
            d.push(c);
            while let Some(p) = d.next_frame() { got.push(p); }
        }
        prop_assert_eq!(got.len(), 1);
        let p = got.remove(0).expect("ok");
        prop_assert_eq!((p.address, p.kind, p.payload.to_vec()), (address, PacketKind::Data, payload));
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut d = Ef01Deframer::new();
        d.push(&bytes);
        while let Some(p) = d.next_frame() {
            if let Ok(p) = p {
                if let Ok(ins) = Instruction::decode(&p.payload) {
                    let _ = ins.decode_ack(&p.payload);
                    prop_assert_eq!(Instruction::decode(&ins.payload()), Ok(ins));
                }
                let _ = Instruction::ReadSysPara.decode_ack(&p.payload);
            }
        }
        let _ = SystemParameters::parse(&bytes);
        let _ = FingerImage::unpack(&bytes);
        let mut sim = Ef01Simulator::new(5);
        sim.require_password = false;
        let _ = sim.on_bytes(&bytes);
    }

    #[test]
    fn system_parameters_round_trip(cap in any::<u16>(), lvl in 1u16..=5, addr in any::<u32>(), size in 0u16..4, n in 1u16..=12) {
        let p = SystemParameters { status_register: 0, system_id: 9, capacity: cap, security_level: lvl, address: addr,
            packet_size: PacketSize::from_code(size).expect("0..4"), baud_multiplier: n };
        prop_assert_eq!(SystemParameters::parse(&p.encode()), Ok(p));
    }
}
