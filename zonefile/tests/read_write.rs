//! Zone files as people write them, read to records; records written and
//! read back to the same octets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use zonefile::{Error, Includes, Name, NoIncludes, Record, Zone, read, write_zone};

fn origin() -> Name {
    Name::parse(b"example.test.", &Name::root()).unwrap()
}

fn zone(text: &str) -> Result<Zone, Vec<Error>> {
    read(
        text.as_bytes(),
        Path::new("z.zone"),
        &origin(),
        &mut NoIncludes,
    )
}

fn lines(z: &Zone) -> Vec<String> {
    z.records
        .iter()
        .map(|r| zonefile::write_record(&r.record))
        .collect()
}

#[test]
fn directives_owners_ttls_and_classes() {
    let z = zone(
        "$ORIGIN example.test.
@ IN 3600 SOA ns1 hostmaster ( 1 ; serial
    2 3 4 5 )
  NS ns1
$TTL 1h
www A 198.18.0.1
    60 IN A 198.18.0.2
$ORIGIN sub.example.test.
x IN TXT \"in sub\"
",
    )
    .unwrap();
    assert_eq!(
        lines(&z),
        [
            "example.test. 3600 IN SOA ns1.example.test. hostmaster.example.test. 1 2 3 4 5",
            "example.test. 3600 IN NS ns1.example.test.",
            "www.example.test. 3600 IN A 198.18.0.1",
            "www.example.test. 60 IN A 198.18.0.2",
            "x.sub.example.test. 3600 IN TXT \"in sub\"",
        ]
    );
    let at: Vec<usize> = z.records.iter().map(|r| r.line).collect();
    assert_eq!(at, [2, 4, 6, 7, 9]);
}

#[test]
fn without_ttl_records_get_nsds_default() {
    let z = zone("a 60 A 198.18.0.1\nb A 198.18.0.2\n").unwrap();
    assert_eq!(z.records[1].record.ttl, zonefile::DEFAULT_TTL);
}

#[test]
fn every_bad_entry_is_reported_with_its_line_and_the_rest_is_read() {
    let errors = zone("$ORIGIN relative\n").unwrap_err();
    assert!(errors[0].message.contains("must be absolute"), "{errors:?}");
    let errors = zone(
        "ok A 198.18.0.1
bad A 198.18.0.1 198.18.0.2
  TXT \"fine\"
worse BOGUS x
$FOO bar
q AXFR x
",
    )
    .unwrap_err();
    let at: Vec<(usize, &str)> = errors
        .iter()
        .map(|e| (e.line, e.message.as_str()))
        .collect();
    assert_eq!(at.len(), 4, "{at:?}");
    assert_eq!(at[0].0, 2);
    assert!(at[0].1.contains("unexpected `198.18.0.2`"), "{at:?}");
    assert_eq!(at[1].0, 4);
    assert!(at[1].1.contains("`BOGUS` is not a record type"), "{at:?}");
    assert_eq!(at[2].0, 5);
    assert!(at[2].1.contains("unknown directive"), "{at:?}");
    assert_eq!(at[3].0, 6);
    assert!(at[3].1.contains("meta type"), "{at:?}");
    assert_eq!(
        errors[0].to_string(),
        format!("z.zone:2: {}", errors[0].message)
    );
}

#[test]
fn an_unclosed_quote_names_where_it_opened() {
    let errors = zone("a A 198.18.0.1\nb TXT \"open\nc A 198.18.0.2\n").unwrap_err();
    assert_eq!(errors[0].line, 2);
}

/// Includes from a map of files, as a caller restricting paths would.
struct Files(HashMap<Vec<u8>, String>);

impl Includes for Files {
    fn read(&mut self, path: &[u8], _: &Path) -> Result<(PathBuf, Vec<u8>), String> {
        let text = self.0.get(path).ok_or("no such file")?;
        Ok((
            PathBuf::from(String::from_utf8_lossy(path).into_owned()),
            text.clone().into_bytes(),
        ))
    }
}

#[test]
fn includes_keep_the_parents_origin_and_report_their_own_file() {
    let mut files = Files(HashMap::from([
        (b"a.inc".to_vec(), "x A 198.18.0.1\n".to_string()),
        (b"b.inc".to_vec(), "y A 198.18.0.2\nbad A x\n".to_string()),
        (b"self.inc".to_vec(), "$INCLUDE self.inc\n".to_string()),
    ]));
    let text = "$INCLUDE a.inc sub\nz A 198.18.0.3\n";
    let z = read(text.as_bytes(), Path::new("z.zone"), &origin(), &mut files).unwrap();
    assert_eq!(
        lines(&z),
        [
            "x.sub.example.test. 3600 IN A 198.18.0.1",
            "z.example.test. 3600 IN A 198.18.0.3"
        ]
    );
    assert_eq!(z.files, [PathBuf::from("z.zone"), PathBuf::from("a.inc")]);
    assert_eq!(z.records[0].file, 1);
    let errors = read(
        b"$INCLUDE b.inc\n",
        Path::new("z.zone"),
        &origin(),
        &mut files,
    )
    .unwrap_err();
    assert_eq!(errors[0].file, PathBuf::from("b.inc"));
    assert_eq!(errors[0].line, 2);
    let errors = read(
        b"$INCLUDE self.inc\n",
        Path::new("z.zone"),
        &origin(),
        &mut files,
    )
    .unwrap_err();
    assert!(errors[0].message.contains("nested"), "{errors:?}");
    let errors = zone("$INCLUDE a.inc\n").unwrap_err();
    assert!(errors[0].message.contains("not allowed"), "{errors:?}");
}

/// A small deterministic generator (xorshift), so that failures repeat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn random_name(rng: &mut Rng) -> Name {
    let labels: Vec<Vec<u8>> = (0..rng.below(4))
        .map(|_| {
            let len = 1 + rng.below(12) as usize;
            rng.bytes(len)
        })
        .collect();
    let origin = origin();
    let mut all: Vec<&[u8]> = labels.iter().map(Vec::as_slice).collect();
    all.extend(origin.labels());
    Name::from_labels(all).unwrap()
}

/// Random rdata that is valid for `rtype`: names, strings and numbers of
/// any octets where the type has them.
fn random_rdata(rng: &mut Rng, rtype: u16) -> Vec<u8> {
    let mut w = Vec::new();
    let string = |rng: &mut Rng, w: &mut Vec<u8>| {
        let len = rng.below(40) as usize;
        w.push(len as u8);
        w.extend(rng.bytes(len));
    };
    match rtype {
        1 => w.extend(rng.bytes(4)),
        28 => w.extend(rng.bytes(16)),
        2 | 5 | 12 | 39 => w.extend(random_name(rng).wire()),
        15 => {
            w.extend(rng.bytes(2));
            w.extend(random_name(rng).wire());
        }
        33 => {
            w.extend(rng.bytes(6));
            w.extend(random_name(rng).wire());
        }
        16 | 13 => {
            for _ in 0..(if rtype == 13 { 2 } else { 1 + rng.below(3) }) {
                string(rng, &mut w);
            }
        }
        257 => {
            w.push(rng.next() as u8);
            w.extend([5, b'i', b's', b's', b'u', b'e']);
            let len = rng.below(30) as usize;
            w.extend(rng.bytes(len));
        }
        43 => {
            let len = 5 + rng.below(30) as usize;
            w.extend(rng.bytes(len));
        }
        _ => {
            let len = rng.below(40) as usize;
            w.extend(rng.bytes(len));
        }
    }
    w
}

#[test]
fn any_records_written_read_back_to_the_same_octets() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let known = [1u16, 2, 5, 12, 13, 15, 16, 28, 33, 39, 43, 257];
    for round in 0..200 {
        let mut records = Vec::new();
        for _ in 0..20 {
            let rtype = if rng.below(2) == 0 {
                known[rng.below(known.len() as u64) as usize]
            } else {
                // Any type without a syntax here: only the generic form.
                let t = 1 + rng.below(65534) as u16;
                if zonefile::is_meta(t) || zonefile::has_syntax(t) {
                    continue;
                }
                t
            };
            records.push(Record {
                owner: random_name(&mut rng),
                class: 1,
                ttl: rng.next() as u32,
                rtype,
                rdata: random_rdata(&mut rng, rtype),
            });
        }
        let text = write_zone("generated", &records);
        let back = read(
            text.as_bytes(),
            Path::new("w.zone"),
            &Name::root(),
            &mut NoIncludes,
        )
        .unwrap_or_else(|e| panic!("round {round}: {e:?}\n{text}"));
        let back: Vec<Record> = back.records.into_iter().map(|r| r.record).collect();
        assert_eq!(back, records, "round {round}\n{text}");
    }
}

#[test]
fn written_names_are_ascii_presentation() {
    let owner = Name::from_labels([&b"b\xc3\xbccher"[..], b"example", b"test"]).unwrap();
    let r = Record {
        owner,
        class: 1,
        ttl: 60,
        rtype: 1,
        rdata: vec![198, 18, 0, 1],
    };
    let text = write_zone("x", &[r]);
    assert!(
        text.contains("b\\195\\188cher.example.test. 60 IN A 198.18.0.1"),
        "{text}"
    );
    assert!(text.is_ascii());
}
