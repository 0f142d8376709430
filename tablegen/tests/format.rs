//! The binary table file: round trips, and every kind of damage is detected.

use std::path::Path;

use tablegen::config::Config;
use tablegen::format::{self, file_checksum, FormatError};
use tablegen::table::build_all;

const CONFIG: &str = include_str!("data/two-services.yaml");

fn file() -> (Config, Vec<u8>) {
    let c = Config::parse(Path::new("two-services.yaml"), CONFIG).unwrap();
    let tables = build_all(&c);
    let bytes = format::write(&c.services, &tables);
    (c, bytes)
}

#[test]
fn round_trip_preserves_everything() {
    let (c, bytes) = file();
    let tables = build_all(&c);
    let read = format::read(&bytes).unwrap();
    assert_eq!(read.len(), c.services.len());
    for ((r, s), t) in read.iter().zip(&c.services).zip(&tables) {
        assert_eq!(r.name, s.name);
        assert_eq!(
            (r.table_bits, r.hops, r.hash_fields),
            (s.table_bits, s.hops, s.hash_fields)
        );
        assert_eq!(r.binds, s.binds);
        assert_eq!(r.backends, s.backends);
        assert_eq!(&r.table, t);
    }
    // Writing what was read gives the same bytes.
    let services: Vec<_> = read
        .iter()
        .zip(&c.services)
        .map(|(r, s)| tablegen::config::Service {
            backends: r.backends.clone(),
            ..s.clone()
        })
        .collect();
    let again: Vec<_> = read.iter().map(|r| r.table.clone()).collect();
    assert_eq!(format::write(&services, &again), bytes);
}

#[test]
fn empty_table_and_no_services_round_trip() {
    let c = Config::parse(Path::new("x"), "services: []\n").unwrap();
    let bytes = format::write(&c.services, &[]);
    assert!(format::read(&bytes).unwrap().is_empty());
}

#[test]
fn every_flipped_byte_is_detected() {
    let (_, bytes) = file();
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x40;
        assert!(format::read(&b).is_err(), "flip at {i} not detected");
    }
}

#[test]
fn every_truncation_is_detected() {
    let (_, bytes) = file();
    for len in 0..bytes.len() {
        assert!(
            format::read(&bytes[..len]).is_err(),
            "truncation to {len} not detected"
        );
    }
}

#[test]
fn header_errors_are_specific() {
    let (_, bytes) = file();
    assert_eq!(
        format::read(b"NOTATABLE.........."),
        Err(FormatError::BadMagic)
    );
    let mut b = bytes.clone();
    b[8] = 9;
    assert_eq!(format::read(&b), Err(FormatError::UnsupportedVersion(9)));
}

/// Damage behind a recomputed file checksum (a buggy writer) is still caught by the table
/// checksum or the structural checks.
#[test]
fn damaged_entries_with_a_valid_file_checksum_are_detected() {
    let (_, bytes) = file();
    let body_len = bytes.len() - 8;
    // The last entry of the last table sits right before the file checksum.
    let mut b = bytes[..body_len].to_vec();
    b[body_len - 4] ^= 1;
    let sum = file_checksum(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    match format::read(&b) {
        Err(FormatError::TableChecksum { .. }) | Err(FormatError::Invalid { .. }) => {}
        other => panic!("not detected: {other:?}"),
    }
    // A huge count must not allocate: it is rejected against the file size.
    let mut b = bytes[..body_len].to_vec();
    b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    let sum = file_checksum(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    assert!(matches!(format::read(&b), Err(FormatError::Invalid { .. })));
}
