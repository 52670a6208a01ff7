//! The general query path (`serve::server::Handler`, what every query the
//! fast path does not take goes through) on whatever arrives: it never
//! panics, every response it sends decodes, carries the query's ID with QR
//! set, and echoes the question unless it answers FORMERR.

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use dnsd::serve::server::Handler;
use dnsd::snapshot::{SharedSnapshot, Snapshot};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use libfuzzer_sys::fuzz_target;

const ZONE: &str = "$TTL 60
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
  IN NS ns1
  IN MX 10 mail
ns1 IN A 198.18.0.53
mail IN A 198.18.0.25
www IN A 198.18.0.1
www IN AAAA 2001:2::1
alias IN CNAME www
old IN DNAME new.example.test.
new IN TXT \"new\"
*.wild IN A 198.18.0.9
sub IN NS ns.sub
ns.sub IN A 198.18.0.54
";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    handler: Handler,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a scratch directory");
        std::fs::create_dir(dir.path().join("zones")).expect("zones/");
        std::fs::write(dir.path().join("zones/example.test.zone"), ZONE).expect("the zone");
        let loaded = dnsd::zone::load(dir.path()).expect("the zone loads");
        let snapshot: SharedSnapshot = Arc::new(arc_swap::ArcSwap::from_pointee(
            Snapshot::from_workspace(loaded, None),
        ));
        Fixture {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
            handler: Handler::new(snapshot),
        }
    })
}

/// Keeps what the handler sends.
#[derive(Clone, Default)]
struct Sent(Arc<Mutex<Vec<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Sent {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut bytes = Vec::new();
        let info = response.destructive_emit(&mut BinEncoder::new(&mut bytes))?;
        self.0.lock().expect("not poisoned").push(bytes);
        Ok(info)
    }
}

fuzz_target!(|query: &[u8]| {
    let src: SocketAddr = "198.18.0.100:5353".parse().expect("an address");
    let Ok(request) = Request::from_bytes(query.to_vec(), src, Protocol::Tcp) else {
        return;
    };
    let fx = fixture();
    let sent = Sent::default();
    fx.runtime
        .block_on(fx.handler.handle_request::<_, TokioTime>(&request, sent.clone()));
    let asked = Message::from_vec(query).expect("what hickory read decodes");
    for bytes in sent.0.lock().expect("not poisoned").iter() {
        let answer = Message::from_vec(bytes).expect("every response decodes");
        assert_eq!(answer.metadata.id, asked.metadata.id);
        assert_eq!(answer.metadata.message_type, MessageType::Response);
        if answer.metadata.response_code != ResponseCode::FormErr
            && asked.metadata.op_code == hickory_proto::op::OpCode::Query
        {
            assert_eq!(answer.queries, asked.queries, "the question echoed");
        }
    }
});
