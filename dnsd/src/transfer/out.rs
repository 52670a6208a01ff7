//! Zone transfers out (AXFR, RFC 5936; IXFR, RFC 1995) over TCP.
//!
//! A transfer is read from the snapshot being served when it is asked for,
//! which it holds to the end: a change meanwhile goes into the next
//! snapshot and the next transfer. The zone goes out in as many messages
//! as it takes (each at most `MESSAGE` octets), the SOA first and last;
//! when the request was signed, every message is signed (RFC 8945 §5.3.1).
//! Owner names are written in lower case, each ending in a pointer to the
//! zone's name; names in rdata are not compressed.
//!
//! An IXFR whose serial is the zone's, or newer, is answered with the one
//! SOA ("up to date", RFC 1995 §4). One whose serial the changes served
//! since the zone was read (`Zone::served_since`: service flips too), or
//! else the zone's journal, lead from, unbroken, to the zone served gets
//! the difference, condensed into one sequence (RFC 1995 §5): the SOA
//! served, the asker's SOA and the records removed since, the SOA served and
//! the records added since, the SOA served. Any other gets the whole zone in
//! AXFR form, which RFC 1995 §4 allows (a hand-edited file, a rollback, a
//! compacted journal).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::clock::unix_now;
use crate::transfer::Transfers;
use hickory_proto::rr::Name;
use hickory_proto::rr::rdata::tsig::TsigError;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info};

use crate::change::tsig::{self, Found, Prior};
use crate::snapshot::{RrSet, Snapshot, Zone};
use crate::zone::journal::{self, Difference};
use crate::zone::name_key::{self, NameKey};

/// The size a message of a transfer is filled to (a record never splits,
/// so one may go past it, up to 65535).
const MESSAGE: usize = 16 * 1024;

/// How long writing one message may take.
const WRITE: std::time::Duration = std::time::Duration::from_secs(30);

const TYPE_SOA: u16 = 6;
const TYPE_IXFR: u16 = 251;
const TYPE_AXFR: u16 = 252;
const CLASS_IN: u16 = 1;

/// RCODEs of a transfer that is not given.
const NOERROR: u8 = 0;
const FORMERR: u8 = 1;
const NOTAUTH: u8 = 9;
const REFUSED: u8 = 5;

/// The question of a transfer request.
struct Asked<'q> {
    id: u16,
    /// The query's RD bit, copied into every message.
    rd: u8,
    /// The question section as sent: echoed in the first message.
    question: &'q [u8],
    /// The zone's key (`name_key`).
    key: NameKey,
    qtype: u16,
    /// An IXFR's serial, from the SOA in its authority section.
    serial: Option<u32>,
}

/// Whether `query` asks for a zone transfer (AXFR or IXFR, opcode QUERY):
/// `serve` answers it, not the general path.
pub fn is_transfer(query: &[u8]) -> bool {
    parse(query).is_some_and(|a| matches!(a.qtype, TYPE_AXFR | TYPE_IXFR))
}

fn parse(query: &[u8]) -> Option<Asked<'_>> {
    let h = query.get(..12)?;
    // A query (QR clear, opcode 0) with one question.
    if h[2] & 0xf8 != 0 || u16::from_be_bytes([h[4], h[5]]) != 1 {
        return None;
    }
    let at = name_key::plain_name_end(query, 12)?;
    let key = NameKey::from_wire(query.get(12..at)?)?;
    let fixed = query.get(at..at + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    if qclass != CLASS_IN {
        return None;
    }
    let question = query.get(12..at + 4)?;
    let serial = (qtype == TYPE_IXFR)
        .then(|| ixfr_serial(query, at + 4))
        .flatten();
    Some(Asked {
        id: u16::from_be_bytes([h[0], h[1]]),
        rd: h[2] & 0x01,
        question,
        key,
        qtype,
        serial,
    })
}

/// The serial of the SOA an IXFR carries in its authority section, which
/// starts at `at` (after the question).
fn ixfr_serial(query: &[u8], at: usize) -> Option<u32> {
    // Its owner is usually a pointer to the question.
    let at = tsig::skip_name(query, at)?;
    let fixed = query.get(at..at + 10)?;
    if u16::from_be_bytes([fixed[0], fixed[1]]) != TYPE_SOA {
        return None;
    }
    let rdlength = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let rdata = query.get(at + 10..at + 10 + rdlength)?;
    Some(zonefile::soa_numbers(rdata)?[0])
}

/// `a` is `b` or newer in serial arithmetic (RFC 1982).
fn serial_at_least(a: u32, b: u32) -> bool {
    a == b || crate::zone::serial_newer(a, b)
}

/// How a transfer's messages are signed: by the request's key, if it was
/// signed.
struct Signer {
    key_name: Name,
    secret: Vec<u8>,
    /// The request's MAC, then each message's.
    mac: Vec<u8>,
    first: bool,
    time: u64,
}

impl Signer {
    fn sign(&mut self, message: &mut Vec<u8>) -> Option<()> {
        let prior = if self.first {
            Prior::Request(&self.mac)
        } else {
            Prior::Message(&self.mac)
        };
        self.mac = tsig::sign(
            message,
            &self.key_name,
            &self.secret,
            prior,
            self.time,
            None,
        )?;
        self.first = false;
        Some(())
    }
}

/// Answers the transfer request `query` from `src`, on `write`, from the
/// snapshot `serving` holds, under dnsd.toml as `transfers` reads it (the
/// transfer policy and the keys), with the zones' journals for IXFR; what
/// was sent is recorded there. Errors are the connection's: the caller
/// closes it.
pub async fn serve<W: tokio::io::AsyncWrite + Unpin>(
    query: &[u8],
    src: SocketAddr,
    serving: Arc<Snapshot>,
    transfers: &Transfers,
    write: &mut W,
) -> std::io::Result<()> {
    let config = transfers.config();
    let live = transfers.workspace().clone();
    let Some(asked) = parse(query) else {
        return Ok(());
    };
    let now = unix_now();
    // The request's key, checked; a bad signature is answered NOTAUTH with
    // the TSIG error (RFC 8945 §5.2), unsigned.
    let mut signer = None;
    match tsig::find(query) {
        Found::Unsigned => {}
        Found::Malformed(why) => {
            debug!(%src, why, "a malformed TSIG on a transfer request");
            return send(write, refusal(&asked, FORMERR)).await;
        }
        Found::Signed(sig) => {
            let key_name = sig.key_name.to_ascii().to_ascii_lowercase();
            let secret = config
                .as_ref()
                .and_then(|c| c.tsig_key(&key_name))
                .map(|k| k.secret.clone());
            if let Err(error) = tsig::verify(query, &sig, secret.as_deref(), now) {
                debug!(%src, key = %key_name, ?error, "a transfer request whose TSIG does not verify");
                let mut message = refusal(&asked, NOTAUTH);
                let code = match error {
                    TsigError::BadTime => TsigError::BadTime,
                    TsigError::BadKey => TsigError::BadKey,
                    _ => TsigError::BadSig,
                };
                let _ = tsig::sign(
                    &mut message,
                    &sig.key_name,
                    &[],
                    Prior::Request(&[]),
                    now,
                    Some(code),
                );
                return send(write, message).await;
            }
            signer = Some(Signer {
                key_name: sig.key_name.clone(),
                secret: secret.unwrap_or_default(),
                mac: sig.tsig.mac.clone(),
                first: true,
                time: now,
            });
        }
    }
    let key_name = signer
        .as_ref()
        .map(|s| s.key_name.to_ascii().to_ascii_lowercase());
    let Some((zone, source)) = serving.served(asked.key.as_bytes()) else {
        return send_signed(write, refusal(&asked, NOTAUTH), &mut signer).await;
    };
    let origin = zone.origin.to_ascii().to_ascii_lowercase();
    let allowed = config
        .as_ref()
        .is_some_and(|c| c.may_transfer(&origin, src.ip(), key_name.as_deref()));
    if !allowed {
        debug!(%src, zone = %origin, key = ?key_name, "a zone transfer refused");
        return send_signed(write, refusal(&asked, REFUSED), &mut signer).await;
    }
    let Some(soa) = zone.soa() else {
        return send_signed(write, refusal(&asked, NOTAUTH), &mut signer).await;
    };
    let serial = zone.serial().unwrap_or(0);
    if let Some(theirs) = asked.serial
        && serial_at_least(theirs, serial)
    {
        let mut out = Messages::new(&asked);
        out.rrset(asked.key.as_bytes(), soa);
        out.finish(write, &mut signer).await?;
        transfers.transferred(&origin, src.ip(), serial, "IXFR (up to date)");
        counted(&asked, NOERROR);
        return Ok(());
    }
    // The changes served since the zone was read (service flips among
    // them), then the journal (across reloads and restarts).
    if let Some(from) = asked.serial
        && let Some((removed, added)) = zone.served_since(from)
        && let Some(from_soa) = soa_with_serial(zone, soa, from)
    {
        let difference = Difference {
            from_soa,
            removed,
            added,
        };
        info!(%src, zone = %origin, from, serial, removed = difference.removed.len(), added = difference.added.len(), "an IXFR");
        ixfr(&difference, &asked, soa, write, &mut signer).await?;
        transfers.transferred(&origin, src.ip(), serial, "IXFR");
        counted(&asked, NOERROR);
        return Ok(());
    }
    if let (Some(from), Some(at)) = (asked.serial, source.replayed.at) {
        let wire_origin = zonefile::Name::parse(origin.as_bytes(), &zonefile::Name::root());
        let asked_origin = origin.clone();
        let difference = tokio::task::spawn_blocking(move || {
            let wire_origin = wire_origin.ok()?;
            journal::difference(&live, &asked_origin, &wire_origin, from, serial, at)
        })
        .await
        .ok()
        .flatten();
        if let Some(difference) = difference {
            info!(%src, zone = %origin, from, serial, removed = difference.removed.len(), added = difference.added.len(), "an IXFR");
            ixfr(&difference, &asked, soa, write, &mut signer).await?;
            transfers.transferred(&origin, src.ip(), serial, "IXFR");
            counted(&asked, NOERROR);
            return Ok(());
        }
    }
    let kind = if asked.qtype == TYPE_IXFR {
        "IXFR (whole zone)"
    } else {
        "AXFR"
    };
    info!(%src, zone = %origin, serial, kind, "a zone transfer");
    axfr(zone, &asked, soa, write, &mut signer).await?;
    transfers.transferred(&origin, src.ip(), serial, kind);
    counted(&asked, NOERROR);
    Ok(())
}

/// Counts a transfer answered with `rcode` (a whole one once sent).
fn counted(asked: &Asked<'_>, rcode: u8) {
    crate::metrics::query(
        crate::metrics::Transport::Tcp,
        crate::metrics::AnswerPath::Transfer,
        asked.qtype,
        rcode.into(),
    );
}

/// The zone's SOA record as it was at serial `serial` (the asker's): only
/// the serial differs from the one served.
fn soa_with_serial(zone: &Zone, soa: &RrSet, serial: u32) -> Option<zonefile::Record> {
    // The wire form is RDLENGTH, then RDATA.
    let mut rdata = soa.rdatas.wire().next()?.get(2..)?.to_vec();
    zonefile::set_soa_serial(&mut rdata, serial)?;
    let owner = NameKey::new(&zone.origin)?;
    let mut wire = owner.as_bytes().to_vec();
    wire.push(0);
    Some(zonefile::Record {
        owner: zonefile::Name::from_wire_prefix(&wire)?.0,
        class: CLASS_IN,
        ttl: soa.ttl,
        rtype: TYPE_SOA,
        rdata,
    })
}

/// The difference since the asker's serial, condensed (RFC 1995 §5).
async fn ixfr<W: tokio::io::AsyncWrite + Unpin>(
    difference: &Difference,
    asked: &Asked<'_>,
    soa: &RrSet,
    write: &mut W,
    signer: &mut Option<Signer>,
) -> std::io::Result<()> {
    let apex = asked.key.as_bytes();
    let mut out = Messages::new(asked);
    out.rrset(apex, soa);
    out.record(&difference.from_soa);
    // The deletions, then the served SOA and the additions.
    for (i, records) in [&difference.removed, &difference.added]
        .into_iter()
        .enumerate()
    {
        if i == 1 {
            out.rrset(apex, soa);
        }
        for r in records {
            out.record(r);
            if out.full() {
                out.flush(write, signer).await?;
            }
        }
    }
    out.rrset(apex, soa);
    out.finish(write, signer).await
}

/// The whole zone: its SOA, every other RRset, its SOA again.
async fn axfr<W: tokio::io::AsyncWrite + Unpin>(
    zone: &Zone,
    asked: &Asked<'_>,
    soa: &RrSet,
    write: &mut W,
    signer: &mut Option<Signer>,
) -> std::io::Result<()> {
    let apex = asked.key.as_bytes();
    let mut out = Messages::new(asked);
    out.rrset(apex, soa);
    // In the order of their keys, not the index's hash order: a secondary
    // builds its tree from the stream, and Knot took 1.55 s to take a
    // million names in hash order, 0.69 s sorted (0.64 s from Knot).
    // Sorting costs about 0.1 s a million.
    let mut names: Vec<(&[u8], &crate::snapshot::Node)> = zone.names().collect();
    names.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (key, node) in names {
        for set in node.rrsets.iter() {
            if key == apex && set.rtype == hickory_proto::rr::RecordType::SOA {
                continue;
            }
            out.rrset(key, set);
            if out.full() {
                out.flush(write, signer).await?;
            }
        }
    }
    out.rrset(apex, soa);
    out.finish(write, signer).await
}

/// The messages of one response, built one at a time.
struct Messages<'a> {
    asked: &'a Asked<'a>,
    message: Vec<u8>,
    count: u16,
    /// The question goes in the first message only.
    first: bool,
    /// Where the zone's name is written in this message (the question's,
    /// or the first owner's): every owner below it ends with a pointer
    /// there (RFC 1035 §4.1.4), which makes a transfer about a quarter
    /// smaller, as NSD's and Knot's are.
    apex_at: Option<u16>,
}

impl<'a> Messages<'a> {
    fn new(asked: &'a Asked<'a>) -> Self {
        let mut m = Self {
            asked,
            message: Vec::with_capacity(MESSAGE + 512),
            count: 0,
            first: true,
            apex_at: None,
        };
        m.start();
        m
    }

    fn start(&mut self) {
        self.message.clear();
        self.message.extend_from_slice(&self.asked.id.to_be_bytes());
        // QR, opcode QUERY, AA; RCODE NOERROR.
        self.message
            .extend_from_slice(&[0x84 | self.asked.rd, 0x00]);
        let qdcount = u16::from(self.first);
        self.message.extend_from_slice(&qdcount.to_be_bytes());
        self.message.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        self.apex_at = None;
        if self.first {
            // The question's name is the zone's (in the asker's case).
            self.apex_at = Some(12);
            self.message.extend_from_slice(self.asked.question);
        }
        self.count = 0;
    }

    /// Writes the owner with key `key`: its labels below the zone's name,
    /// then a pointer to that name, once it is in the message.
    fn owner(&mut self, key: &[u8]) {
        let apex = self.asked.key.as_bytes();
        let Some(below) = key
            .len()
            .checked_sub(apex.len())
            .filter(|_| key.ends_with(apex))
        else {
            self.message.extend_from_slice(key);
            self.message.push(0);
            return;
        };
        match self.apex_at {
            Some(at) => {
                self.message.extend_from_slice(&key[..below]);
                self.message.extend_from_slice(&(0xc000 | at).to_be_bytes());
            }
            None => {
                let at = self.message.len() + below;
                self.message.extend_from_slice(key);
                self.message.push(0);
                // A pointer has 14 bits.
                self.apex_at = u16::try_from(at).ok().filter(|&at| at < 0x4000);
            }
        }
    }

    /// Adds the records of `set`, owned by the name with key `key`.
    fn rrset(&mut self, key: &[u8], set: &RrSet) {
        for rdata in set.rdatas.wire() {
            self.owner(key);
            self.message
                .extend_from_slice(&u16::from(set.rtype).to_be_bytes());
            self.message.extend_from_slice(&CLASS_IN.to_be_bytes());
            self.message.extend_from_slice(&set.ttl.to_be_bytes());
            self.message.extend_from_slice(rdata);
            self.count += 1;
        }
    }

    /// Adds `r` as the zone file gave it.
    fn record(&mut self, r: &zonefile::Record) {
        let Ok(rdlength) = u16::try_from(r.rdata.len()) else {
            return;
        };
        self.message.extend_from_slice(r.owner.wire());
        self.message.extend_from_slice(&r.rtype.to_be_bytes());
        self.message.extend_from_slice(&r.class.to_be_bytes());
        self.message.extend_from_slice(&r.ttl.to_be_bytes());
        self.message.extend_from_slice(&rdlength.to_be_bytes());
        self.message.extend_from_slice(&r.rdata);
        self.count += 1;
    }

    fn full(&self) -> bool {
        self.message.len() >= MESSAGE || self.count > u16::MAX - 1024
    }

    async fn flush<W: tokio::io::AsyncWrite + Unpin>(
        &mut self,
        write: &mut W,
        signer: &mut Option<Signer>,
    ) -> std::io::Result<()> {
        self.message[6..8].copy_from_slice(&self.count.to_be_bytes());
        let mut message = std::mem::take(&mut self.message);
        if let Some(signer) = signer.as_mut()
            && signer.sign(&mut message).is_none()
        {
            return Err(std::io::Error::other("could not sign a transfer message"));
        }
        send(write, message).await?;
        self.first = false;
        self.message = Vec::with_capacity(MESSAGE + 512);
        self.start();
        Ok(())
    }

    async fn finish<W: tokio::io::AsyncWrite + Unpin>(
        mut self,
        write: &mut W,
        signer: &mut Option<Signer>,
    ) -> std::io::Result<()> {
        self.flush(write, signer).await
    }
}

/// A response with `rcode` and the question, nothing else.
fn refusal(asked: &Asked<'_>, rcode: u8) -> Vec<u8> {
    counted(asked, rcode);
    let mut m = Vec::with_capacity(12 + asked.question.len());
    m.extend_from_slice(&asked.id.to_be_bytes());
    m.extend_from_slice(&[0x80 | asked.rd, rcode, 0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(asked.question);
    m
}

async fn send_signed<W: tokio::io::AsyncWrite + Unpin>(
    write: &mut W,
    mut message: Vec<u8>,
    signer: &mut Option<Signer>,
) -> std::io::Result<()> {
    if let Some(signer) = signer.as_mut() {
        let _ = signer.sign(&mut message);
    }
    send(write, message).await
}

/// Writes one message with its length first.
async fn send<W: tokio::io::AsyncWrite + Unpin>(
    write: &mut W,
    message: Vec<u8>,
) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::other("a transfer message over 65535 octets"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&message);
    // A reader that stops reading is let go: the transfer holds a snapshot.
    match tokio::time::timeout(WRITE, write.write_all(&framed)).await {
        Ok(written) => written,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the transfer's reader stopped reading",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_compare_in_serial_arithmetic() {
        assert!(serial_at_least(5, 5));
        assert!(serial_at_least(6, 5));
        assert!(!serial_at_least(4, 5));
        assert!(serial_at_least(1, u32::MAX));
        assert!(!serial_at_least(u32::MAX, 1));
    }

    #[test]
    fn transfer_questions_are_told_apart_and_an_ixfr_serial_read() {
        let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0];
        q.extend_from_slice(b"\x07example\x04test\x00\x00\xfb\x00\x01");
        q.extend_from_slice(b"\xc0\x0c\x00\x06\x00\x01\x00\x00\x00\x00\x00\x16");
        q.extend_from_slice(b"\x00\x00");
        q.extend_from_slice(&7u32.to_be_bytes());
        q.extend_from_slice(&[0; 16]);
        assert!(is_transfer(&q));
        let asked = parse(&q).unwrap();
        assert_eq!((asked.qtype, asked.serial), (TYPE_IXFR, Some(7)));
        let mut a = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        a.extend_from_slice(b"\x07example\x04test\x00\x00\x01\x00\x01");
        assert!(!is_transfer(&a));
    }
}
