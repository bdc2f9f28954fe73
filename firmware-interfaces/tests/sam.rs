//! SAM protocol: known vectors, the four text layouts, simulator behaviour, property tests.

use firmware_interfaces::framing::FrameAssembler;
use firmware_interfaces::gb11643::IdNumberError;
use firmware_interfaces::sam::reply::CARD_FINGERPRINT_LEN;
use firmware_interfaces::sam::*;
use firmware_interfaces::sim::{SamSimulator, fixtures};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect()
}

fn responses(bytes: &[u8]) -> Vec<Result<SamResponse, SamFrameError>> {
    let mut d = SamDeframer::new();
    d.push(bytes);
    std::iter::from_fn(|| d.next_frame())
        .map(|r| r.map(|f| SamResponse::from_frame(&f).expect("has status")))
        .collect()
}

fn one(bytes: &[u8]) -> SamResponse {
    let mut r = responses(bytes);
    assert_eq!(r.len(), 1, "expected exactly one frame");
    r.remove(0).expect("valid frame")
}

fn ask(sim: &mut SamSimulator, cmd: SamCommand) -> Result<SamReply, ReplyError> {
    cmd.decode_reply(&one(&sim.on_bytes(&cmd.encode())))
}

#[test]
fn known_reply_frames_decode() {
    let reset_ok = one(&hex("AA AA AA 96 69 00 04 00 00 90 94"));
    assert_eq!(
        SamCommand::ResetSam.decode_reply(&reset_ok),
        Ok(SamReply::Done)
    );
    let found = one(&hex("AA AA AA 96 69 00 08 00 00 9F 00 00 00 00 97"));
    assert_eq!(
        SamCommand::FindCard.decode_reply(&found),
        Ok(SamReply::CardFound { iin: [0; 4] })
    );
    let selected = one(&hex(
        "AA AA AA 96 69 00 0C 00 00 90 00 00 00 00 00 00 00 00 9C",
    ));
    assert_eq!(
        SamCommand::SelectCard.decode_reply(&selected),
        Ok(SamReply::CardSelected { serial: [0; 8] })
    );
    let self_test = one(&hex("AA AA AA 96 69 00 04 00 00 60 64"));
    assert_eq!(
        SamCommand::SamStatus.decode_reply(&self_test),
        Err(ReplyError::Status(SamStatus::SelfTestFailed))
    );
    for (frame, cmd, status) in [
        (
            "AA AA AA 96 69 00 04 00 00 80 84",
            SamCommand::FindCard,
            SamStatus::FindFailed,
        ),
        (
            "AA AA AA 96 69 00 04 00 00 81 85",
            SamCommand::SelectCard,
            SamStatus::SelectFailed,
        ),
        (
            "AA AA AA 96 69 00 04 00 00 41 45",
            SamCommand::ReadText,
            SamStatus::ReadFailed,
        ),
    ] {
        assert_eq!(
            cmd.decode_reply(&one(&hex(frame))),
            Err(ReplyError::Status(status))
        );
    }
    // Error frames with non-zero SW1/SW2 are judged on SW3 only.
    let mut odd = encode_frame(&[0x6A, 0x82, 0x41]);
    assert_eq!(one(&odd).status, SamStatus::ReadFailed);
    odd.clear();
}

#[test]
fn sam_id_reply_is_27_bytes_and_renders() {
    let mut sim = SamSimulator::new();
    let bytes = sim.on_bytes(&SamCommand::ReadSamId.encode());
    assert_eq!(bytes.len(), 27);
    assert_eq!(bytes.get(5..10), Some(&hex("00 14 00 00 90")[..]));
    let Ok(SamReply::SamId(id)) = SamCommand::ReadSamId.decode_reply(&one(&bytes)) else {
        panic!("sam id")
    };
    assert_eq!(id.to_string(), "05.01-20260101-0000000001-0000000099");
}

#[test]
fn base_read_lengths_follow_the_notes() {
    let card = fixtures::card(fixtures::resident_text(1), 1);
    let data = card.card_data();
    for (with_fp, fps, total, len_field) in [
        (false, 2, 1295, "05 08"),
        (true, 2, 2321, "09 0A"),
        (true, 1, 1809, "07 0A"),
        (true, 0, 1297, "05 0A"),
    ] {
        let mut d = data.clone();
        d.fingerprints.truncate(fps);
        let frame = SamResponse::new(SamStatus::Success, d.encode(with_fp)).encode();
        assert_eq!(frame.len(), total);
        assert_eq!(frame.get(5..7), Some(&hex(len_field)[..]));
        let cmd = if with_fp {
            SamCommand::ReadTextAndFingerprint
        } else {
            SamCommand::ReadText
        };
        let Ok(SamReply::Card(parsed)) = cmd.decode_reply(&one(&frame)) else {
            panic!("card")
        };
        assert_eq!(parsed.fingerprints.len(), if with_fp { fps } else { 0 });
        assert_eq!(parsed.photo.expose().len(), 1024);
    }
    // Header of the 1295-byte reply, as logged by readers.
    let frame = SamResponse::new(SamStatus::Success, data.encode(false)).encode();
    assert_eq!(
        frame.get(..14),
        Some(&hex("AA AA AA 96 69 05 08 00 00 90 01 00 04 00")[..])
    );
}

#[test]
fn four_layouts_decode_to_typed_fields() {
    let [resident, hmt, f2017, f2023] = fixtures::all_layouts(7);
    let flags = [[0x20, 0x00], [0x4A, 0x00], [0x49, 0x00], [0x59, 0x00]];
    for (card, flag) in [&resident, &hmt, &f2017, &f2023].into_iter().zip(flags) {
        let block = card.text.encode();
        assert_eq!(block.as_bytes().get(248..250), Some(&flag[..]));
        assert_eq!(block.decode().as_ref(), Ok(&card.text));
    }
    let CardText::Resident(r) = resident.text.encode().decode().expect("resident") else {
        panic!()
    };
    assert_eq!(r.name.expose(), "测试甲");
    assert_eq!((r.sex, r.nation.name()), (Sex::Male, "汉"));
    assert_eq!(r.birth_date.to_string(), "1990-01-02");
    assert_eq!(r.valid_until.to_string(), "2040-03-04");
    // Field positions in the raw block: name at 0, ID number at 122 (UCS-2LE digits).
    let raw = resident.text.encode();
    assert_eq!(
        raw.as_bytes().get(0..2),
        Some(&"测".encode_utf16().next().expect("c").to_le_bytes()[..])
    );
    assert_eq!(raw.as_bytes().get(122..124), Some(&[b'9', 0][..]));
    let t2023 = f2023.text.encode().decode().expect("2023");
    assert_eq!(t2023.valid_until(), ValidUntil::LongTerm);
    assert_eq!(t2023.valid_until().to_string(), "long-term");
    assert_eq!(t2023.nation(), None);
    let CardText::ForeignPermanent2023(y) = t2023 else {
        panic!()
    };
    assert_eq!(y.english_name.expose().chars().count(), 46);
    assert_eq!(hmt.text.layout(), CardLayout::HkMacaoTaiwan);
    assert!(f2017.text.address().is_none());
}

/// A card's `Debug` (what `{:?}` in a log line or an error would print) must not carry the
/// holder's values: derived `Debug` printed the birth date, issuing authority and validity.
#[test]
fn debug_of_a_decoded_card_prints_no_personal_value() {
    for card in fixtures::all_layouts(7) {
        let decoded = card.text.encode().decode().expect("decodes");
        let shown = format!("{decoded:?} {:?} {:#?}", card.text, decoded);
        let mut values = vec![
            decoded.identity_number().expose().to_string(),
            decoded.valid_until().to_string(),
        ];
        if let CardText::Resident(r) = &decoded {
            values.extend([
                r.name.expose().to_string(),
                r.address.expose().to_string(),
                r.authority.clone(),
                r.birth_date.to_string(),
                r.birth_date.compact(),
                r.birth_date.date().year().to_string(),
                r.valid_from.to_string(),
            ]);
        }
        for v in values.iter().filter(|v| v.chars().count() >= 4) {
            assert!(!shown.contains(v.as_str()), "{v:?} in {shown}");
        }
    }
}

#[test]
fn bad_check_digit_in_a_card_is_reported() {
    let card = fixtures::card(fixtures::resident_text(3), 3);
    let mut bytes = *card.text.encode().as_bytes();
    // Last ID character (offset 122 + 17*2): change it to another digit.
    let pos = 122 + 34;
    bytes[pos] = if bytes[pos] == b'1' { b'2' } else { b'1' };
    let block = TextBlock::from_bytes(&bytes).expect("256");
    assert_eq!(
        block.decode(),
        Err(TextError::IdNumber(IdNumberError::CheckDigit))
    );
}

#[test]
fn malformed_fields_and_flags_are_errors() {
    let card = fixtures::card(fixtures::resident_text(3), 3);
    let mut bytes = *card.text.encode().as_bytes();
    bytes[248] = b'Q';
    assert_eq!(
        TextBlock::from_bytes(&bytes).expect("256").decode(),
        Err(TextError::UnknownLayout(0x51))
    );
    let mut bytes = *card.text.encode().as_bytes();
    bytes[30] = b'5'; // sex
    assert_eq!(
        TextBlock::from_bytes(&bytes).expect("256").decode(),
        Err(TextError::Field("sex"))
    );
    let mut bytes = *card.text.encode().as_bytes();
    bytes[34] = b'7'; // nation "07" -> "77"
    bytes[32] = b'7';
    assert_eq!(
        TextBlock::from_bytes(&bytes).expect("256").decode(),
        Err(TextError::Field("nation"))
    );
    assert_eq!(TextBlock::from_bytes(&[0; 10]), Err(TextError::Length(10)));
}

#[test]
fn simulator_find_once_per_presentation_and_select_before_read() {
    let mut sim = SamSimulator::new();
    assert_eq!(
        ask(&mut sim, SamCommand::FindCard),
        Err(ReplyError::Status(SamStatus::FindFailed))
    );
    let card = fixtures::card(fixtures::resident_text(1), 1);
    sim.present_card(card.clone());
    assert_eq!(
        ask(&mut sim, SamCommand::ReadText),
        Err(ReplyError::Status(SamStatus::ReadFailed))
    );
    assert_eq!(
        ask(&mut sim, SamCommand::SelectCard),
        Err(ReplyError::Status(SamStatus::SelectFailed))
    );
    assert!(matches!(
        ask(&mut sim, SamCommand::FindCard),
        Ok(SamReply::CardFound { .. })
    ));
    assert!(matches!(
        ask(&mut sim, SamCommand::SelectCard),
        Ok(SamReply::CardSelected { .. })
    ));
    let Ok(SamReply::Card(data)) = ask(&mut sim, SamCommand::ReadTextAndFingerprint) else {
        panic!("read")
    };
    assert_eq!(data.text.decode().expect("text"), card.text);
    assert_eq!(data.fingerprints.len() * CARD_FINGERPRINT_LEN, 1024);
    assert_eq!(data.fingerprints[0].position(), FingerPosition::RightIndex);
    // Appended address after a read: none on this card.
    assert_eq!(
        ask(&mut sim, SamCommand::ReadAppendedAddress),
        Ok(SamReply::AppendedAddresses(vec![]))
    );
    // Same card still on the reader: find fails until re-presented.
    assert_eq!(
        ask(&mut sim, SamCommand::FindCard),
        Err(ReplyError::Status(SamStatus::FindFailed))
    );
    sim.present_card(card);
    assert!(matches!(
        ask(&mut sim, SamCommand::FindCard),
        Ok(SamReply::CardFound { .. })
    ));
}

#[test]
fn simulator_appended_addresses() {
    let mut sim = SamSimulator::new();
    let mut card = fixtures::card(fixtures::resident_text(1), 1);
    card.appended_addresses = vec![
        firmware_interfaces::personal::Address::new("新测试地址一"),
        firmware_interfaces::personal::Address::new("新测试地址二"),
    ];
    sim.present_card(card);
    ask(&mut sim, SamCommand::FindCard).expect("find");
    ask(&mut sim, SamCommand::SelectCard).expect("select");
    ask(&mut sim, SamCommand::ReadText).expect("read");
    let Ok(SamReply::AppendedAddresses(a)) = ask(&mut sim, SamCommand::ReadAppendedAddress) else {
        panic!()
    };
    assert_eq!(
        a.iter().map(|x| x.expose().to_string()).collect::<Vec<_>>(),
        ["新测试地址一", "新测试地址二"]
    );
}

#[test]
fn simulator_faults() {
    let mut sim = SamSimulator::new();
    sim.present_card(fixtures::card(fixtures::resident_text(1), 1));
    // Wrong checksum from the host -> 10.
    let mut bad = SamCommand::FindCard.encode();
    if let Some(l) = bad.last_mut() {
        *l ^= 1;
    }
    assert_eq!(one(&sim.on_bytes(&bad)).status, SamStatus::ChecksumError);
    // Unknown command -> 21.
    assert_eq!(
        one(&sim.on_bytes(&encode_frame(&[0x77, 0x01]))).status,
        SamStatus::CommandError
    );
    // Split + coalesced writes, leading garbage in front.
    let mut stream = vec![0x00, 0x13, 0xAA];
    stream.extend(SamCommand::FindCard.encode());
    stream.extend(SamCommand::SelectCard.encode());
    let mut out = Vec::new();
    for chunk in stream.chunks(3) {
        out.extend(sim.on_bytes(chunk));
    }
    let statuses: Vec<_> = responses(&out)
        .into_iter()
        .map(|r| r.expect("frame").status)
        .collect();
    assert_eq!(statuses, [SamStatus::CardFound, SamStatus::Success]);
    // Card pulled during the read -> 41 and the card is gone.
    sim.faults.remove_card_during_next_read = true;
    assert_eq!(
        ask(&mut sim, SamCommand::ReadText),
        Err(ReplyError::Status(SamStatus::ReadFailed))
    );
    assert!(!sim.has_card());
    // Garbage before and a corrupted reply.
    sim.faults.garbage_before_next_reply = vec![0xAA, 0x00, 0x55];
    sim.faults.corrupt_next_reply = true;
    assert_eq!(
        responses(&sim.on_bytes(&SamCommand::SamStatus.encode())),
        vec![Err(SamFrameError::Checksum)]
    );
    // Silent device.
    sim.faults.silent = true;
    assert!(sim.on_bytes(&SamCommand::SamStatus.encode()).is_empty());
    sim.faults.silent = false;
    // Old modules without fingerprint support.
    sim.faults.no_fingerprint_support = true;
    assert_eq!(
        ask(&mut sim, SamCommand::ReadTextAndFingerprint),
        Err(ReplyError::Status(SamStatus::CommandError))
    );
    // Set baud answers at the old speed, then switches.
    assert_eq!(
        ask(&mut sim, SamCommand::SetBaud(SamBaud::B9600)),
        Ok(SamReply::Done)
    );
    assert_eq!(sim.baud(), SamBaud::B9600);
}

fn ucs2_text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just('测'),
            Just('试'),
            Just('A'),
            Just('z'),
            Just('路'),
            Just('1')
        ],
        1..=max,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #[test]
    fn frames_round_trip_through_garbage_and_splits(
        body in proptest::collection::vec(any::<u8>(), 1..300),
        garbage in proptest::collection::vec(any::<u8>(), 0..40),
        split in 1usize..64,
    ) {
        let mut stream: Vec<u8> = garbage.iter().copied().filter(|b| *b != 0xAA).collect();
        stream.extend(encode_frame(&body));
        let mut d = SamDeframer::new();
        let mut got = Vec::new();
        for chunk in stream.chunks(split) {
            d.push(chunk);
            while let Some(f) = d.next_frame() {
                got.push(f);
            }
        }
        prop_assert_eq!(got.len(), 1);
        prop_assert_eq!(got[0].as_ref().map(|f| f.body().to_vec()).ok(), Some(body));
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let mut d = SamDeframer::new();
        d.push(&bytes);
        let mut n = 0;
        while let Some(f) = d.next_frame() {
            n += 1;
            prop_assert!(n <= bytes.len());
            if let Ok(f) = f {
                if let Ok(r) = SamResponse::from_frame(&f) {
                    for cmd in [SamCommand::ReadSamId, SamCommand::FindCard, SamCommand::SelectCard,
                                SamCommand::ReadText, SamCommand::ReadTextAndFingerprint, SamCommand::ReadAppendedAddress] {
                        let _ = cmd.decode_reply(&r);
                    }
                }
            }
        }
        let _ = CardData::parse(&bytes, true);
        let _ = CardData::parse(&bytes, false);
        if let Some(block) = bytes.get(..256) {
            let _ = TextBlock::from_bytes(block).expect("256").decode();
        }
        let mut sim = SamSimulator::new();
        let _ = sim.on_bytes(&bytes);
    }

    #[test]
    fn resident_text_round_trips(name in ucs2_text(15), address in ucs2_text(35), seq in 0u32..1000, nation in 1u8..=56) {
        let mut text = fixtures::resident_text(seq);
        if let CardText::Resident(r) = &mut text {
            r.name = firmware_interfaces::personal::PersonName::new(name);
            r.address = firmware_interfaces::personal::Address::new(address);
            r.nation = Nation::from_code(nation).expect("valid");
        }
        prop_assert_eq!(text.encode().decode(), Ok(text));
    }
}
