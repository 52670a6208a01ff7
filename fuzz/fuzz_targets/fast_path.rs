//! The UDP fast path against hickory's decoder: whatever bytes arrive, the
//! fast path never panics, and when it answers, the query is one hickory
//! reads as the same single question, and the answer is a message hickory
//! reads, with the query's ID, QR set and that question echoed.

#![no_main]

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use dnsd::snapshot::Snapshot;
use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;

const ZONE: &str = "$TTL 60
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
  IN NS ns1
ns1 IN A 198.18.0.53
www IN A 198.18.0.1
www IN A 198.18.0.2
www IN AAAA 2001:2::1
txt IN TXT \"a\" \"b\"
alias IN CNAME www
*.wild IN A 198.18.0.9
sub IN NS ns.sub
ns.sub IN A 198.18.0.54
";

fn snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a scratch directory");
        std::fs::create_dir(dir.path().join("zones")).expect("zones/");
        std::fs::write(dir.path().join("zones/example.test.zone"), ZONE).expect("the zone");
        let loaded = dnsd::zone::load(dir.path()).expect("the zone loads");
        Snapshot::from_workspace(loaded, None)
    })
}

fuzz_target!(|query: &[u8]| {
    let rotation = AtomicU64::new(0);
    let mut out = Vec::new();
    if !dnsd::serve::fast_path::answer(
        snapshot(),
        query,
        std::net::Ipv4Addr::LOCALHOST.into(),
        &rotation,
        &mut out,
    ) {
        return;
    }
    let asked = Message::from_vec(query).expect("a query the fast path answers decodes");
    assert_eq!(asked.queries.len(), 1);
    let answer = Message::from_vec(&out).expect("the fast path's answer decodes");
    assert_eq!(answer.metadata.id, asked.metadata.id);
    assert_eq!(
        answer.metadata.message_type,
        hickory_proto::op::MessageType::Response
    );
    assert_eq!(answer.queries, asked.queries, "the question echoed");
});
