//! The zone-file reader on whatever text: it never panics, and a zone it
//! reads is written back (`write_zone`) as text that reads as exactly the
//! same records.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use zonefile::{Name, NoIncludes};

fuzz_target!(|text: &[u8]| {
    let origin = Name::parse(b"example.test.", &Name::root()).expect("the origin");
    let Ok(zone) = zonefile::read(text, Path::new("fuzz"), &origin, &mut NoIncludes) else {
        return;
    };
    let records: Vec<_> = zone.records.iter().map(|r| r.record.clone()).collect();
    let written = zonefile::write_zone("; fuzz", &records);
    let back = zonefile::read(
        written.as_bytes(),
        Path::new("written"),
        &origin,
        &mut NoIncludes,
    )
    .expect("what the writer wrote reads");
    let again: Vec<_> = back.records.iter().map(|r| r.record.clone()).collect();
    assert_eq!(again, records);
});
