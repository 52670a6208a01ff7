//! RFC 2136 on whatever arrives: an update section decoded from the bytes
//! is prescanned and, if it passes, applied to a zone; nothing panics, and
//! the result is rewritten as a zone file that reads back as exactly the
//! same records, or the rewrite refuses (it never writes other records).

#![no_main]

use dnsd::change::update::{self, Zone};
use dnsd::change::zone_edit;
use dnsd::zone::{parse_records, records};
use hickory_proto::op::Message;
use hickory_proto::rr::Name;
use libfuzzer_sys::fuzz_target;

const ZONE: &str = "$ORIGIN example.test.
@ 300 IN SOA ns1 hostmaster 1 3600 600 86400 60
@ 300 IN NS ns1
ns1 300 IN A 198.18.0.53
www 60 IN A 198.18.0.1
alias 60 IN CNAME www
";

fuzz_target!(|bytes: &[u8]| {
    let Ok(message) = Message::from_vec(bytes) else {
        return;
    };
    let origin = Name::from_ascii("example.test.").expect("the origin");
    let mut zone_records = parse_records(ZONE, &origin).expect("the zone parses");
    let updates: Vec<_> = message.authorities.iter().map(records::canonical).collect();
    let children: [Name; 0] = [];
    let scope = Zone {
        origin: &origin,
        children: &children,
    };
    let _ = update::check_prerequisites(&scope, &zone_records, &message.answers);
    if update::prescan(&scope, &updates).is_err() {
        return;
    }
    update::apply(&scope, &mut zone_records, &updates);
    if let Ok(text) = zone_edit::render(&origin, &zone_records, "the fuzzer") {
        let back = parse_records(&text, &origin).expect("a rendered zone parses");
        assert_eq!(zone_edit::lines(&back), zone_edit::lines(&zone_records));
    }
});
