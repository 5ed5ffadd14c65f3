//! Property tests of both parsers: total on any input, exact on valid input.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use kestrel_uevent::{parse_netlink, parse_sysfs, Action, Uevent, UeventError, UEVENT_MAX};
use proptest::prelude::*;

/// Keys as the kernel writes them, but never the ones the parser checks or
/// converts (those get their own strategies).
fn key() -> impl Strategy<Value = Vec<u8>> {
    "[A-Z_][A-Z0-9_]{0,15}"
        .prop_filter("checked keys", |k| {
            !matches!(
                k.as_str(),
                "ACTION" | "DEVPATH" | "SEQNUM" | "MAJOR" | "MINOR"
            )
        })
        .prop_map(String::into_bytes)
}

/// Any bytes except the record separator.
fn value(sep: u8) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("separator", move |b| *b != sep),
        0..40,
    )
}

fn devpath() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::collection::vec(
            any::<u8>().prop_filter("NUL or /", |b| !matches!(*b, 0 | b'/')),
            1..12,
        ),
        1..8,
    )
    .prop_map(|parts| {
        let mut p = Vec::new();
        for part in parts {
            p.push(b'/');
            p.extend(part);
        }
        p
    })
}

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(Action::ALL.to_vec())
}

#[derive(Debug)]
struct Spec {
    action: Action,
    devpath: Vec<u8>,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

fn spec(sep: u8) -> impl Strategy<Value = Spec> {
    (
        action(),
        devpath(),
        prop::collection::vec((key(), value(sep)), 0..20),
        prop::option::of(any::<u64>()),
        prop::option::of((any::<u32>(), any::<u32>())),
        any::<bool>(),
    )
        .prop_map(
            move |(action, devpath, mut fields, seqnum, devt, with_header_keys)| {
                if with_header_keys && sep == 0 {
                    fields.insert(0, (b"DEVPATH".to_vec(), devpath.clone()));
                    fields.insert(0, (b"ACTION".to_vec(), action.as_bytes().to_vec()));
                }
                if let Some((ma, mi)) = devt {
                    fields.push((b"MAJOR".to_vec(), ma.to_string().into_bytes()));
                    fields.push((b"MINOR".to_vec(), mi.to_string().into_bytes()));
                }
                if let Some(s) = seqnum {
                    fields.push((b"SEQNUM".to_vec(), s.to_string().into_bytes()));
                }
                Spec {
                    action,
                    devpath,
                    fields,
                }
            },
        )
}

fn datagram(s: &Spec) -> Vec<u8> {
    let mut d = s.action.as_bytes().to_vec();
    d.push(b'@');
    d.extend_from_slice(&s.devpath);
    d.push(0);
    for (k, v) in &s.fields {
        d.extend_from_slice(k);
        d.push(b'=');
        d.extend_from_slice(v);
        d.push(0);
    }
    d
}

fn sysfs_content(s: &Spec) -> Vec<u8> {
    let mut d = Vec::new();
    for (k, v) in &s.fields {
        d.extend_from_slice(k);
        d.push(b'=');
        d.extend_from_slice(v);
        d.push(b'\n');
    }
    d
}

fn first<'a>(s: &'a Spec, key: &[u8]) -> Option<&'a [u8]> {
    s.fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

fn check_matches(ev: &Uevent, s: &Spec) {
    assert_eq!(ev.action(), s.action);
    assert_eq!(ev.devpath(), &s.devpath[..]);
    let got: Vec<_> = ev.fields().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    assert_eq!(got, s.fields);
    for (k, _) in &s.fields {
        assert_eq!(ev.get(k), first(s, k));
    }
    assert_eq!(ev.subsystem(), first(s, b"SUBSYSTEM"));
    assert_eq!(ev.devtype(), first(s, b"DEVTYPE"));
    assert_eq!(ev.devname(), first(s, b"DEVNAME"));
    assert_eq!(ev.driver(), first(s, b"DRIVER"));
    assert_eq!(ev.modalias(), first(s, b"MODALIAS"));
    let num =
        |k: &[u8]| first(s, k).map(|v| std::str::from_utf8(v).unwrap().parse::<u64>().unwrap());
    assert_eq!(ev.seqnum(), num(b"SEQNUM"));
    let devt = num(b"MAJOR")
        .zip(num(b"MINOR"))
        .map(|(a, b)| (a as u32, b as u32));
    assert_eq!(ev.major_minor(), devt);
}

/// What holds for any event the parsers return, whatever the input.
fn check_invariants(ev: &Uevent) {
    assert!(ev.devpath().starts_with(b"/"));
    assert!(!ev.devpath().contains(&0));
    for (k, _) in ev.fields() {
        assert!(!k.is_empty());
        assert!(!k.contains(&b'='));
        assert!(ev.get(k).is_some());
    }
    assert!(ev.raw().len() <= UEVENT_MAX);
    let _ = format!("{ev:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn netlink_is_total(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(ev) = parse_netlink(Bytes::from(bytes)) {
            check_invariants(&ev);
        }
    }

    #[test]
    fn netlink_is_total_on_plausible_input(
        action in prop::sample::select(vec!["add", "remove", "bind", "ad", "", "libudev"]),
        body in prop::collection::vec(prop::sample::select(b"/@=\0A1\n\xffSEQNUM".to_vec()), 0..80),
    ) {
        let mut d = action.as_bytes().to_vec();
        d.extend(body);
        if let Ok(ev) = parse_netlink(Bytes::from(d)) {
            check_invariants(&ev);
        }
    }

    #[test]
    fn sysfs_is_total(
        devpath in prop::collection::vec(any::<u8>(), 0..40),
        bytes in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        if let Ok(ev) = parse_sysfs(&devpath, Bytes::from(bytes)) {
            check_invariants(&ev);
            prop_assert_eq!(ev.action(), Action::Add);
            prop_assert_eq!(ev.devpath(), &devpath[..]);
        }
    }

    #[test]
    fn netlink_round_trips(s in spec(0)) {
        let ev = parse_netlink(Bytes::from(datagram(&s))).unwrap();
        check_matches(&ev, &s);
        check_invariants(&ev);
    }

    #[test]
    fn sysfs_round_trips(s in spec(b'\n')) {
        let ev = parse_sysfs(&s.devpath, Bytes::from(sysfs_content(&s))).unwrap();
        let s = Spec { action: Action::Add, ..s };
        check_matches(&ev, &s);
        check_invariants(&ev);
    }

    #[test]
    fn one_corrupted_byte_never_panics(s in spec(0), at in any::<prop::sample::Index>(), b in any::<u8>()) {
        let mut d = datagram(&s);
        let i = at.index(d.len());
        d[i] = b;
        if let Ok(ev) = parse_netlink(Bytes::from(d)) {
            check_invariants(&ev);
        }
    }

    #[test]
    fn truncation_is_an_error_or_a_prefix(s in spec(0), cut in any::<prop::sample::Index>()) {
        let d = datagram(&s);
        let cut = cut.index(d.len());
        match parse_netlink(Bytes::copy_from_slice(&d[..cut])) {
            // Cut right after a record's NUL: the fields are a prefix.
            Ok(ev) => {
                let got: Vec<_> = ev.fields().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
                prop_assert!(s.fields.starts_with(&got));
            }
            // Otherwise the cut left an unterminated record or no header.
            Err(e) => {
                let expected = matches!(
                    e,
                    UeventError::Empty | UeventError::Unterminated | UeventError::MissingHeader | UeventError::UnknownAction(_)
                );
                prop_assert!(expected, "{}", e);
            }
        }
    }
}
