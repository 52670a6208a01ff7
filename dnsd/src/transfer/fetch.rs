//! Transfers in: what a replica asks its primary — the zone's SOA serial
//! (over UDP, TCP when truncated), and the zone by IXFR (RFC 1995) or AXFR
//! (RFC 5936) over TCP — each request signed when a key is set, and every
//! signed message of the answer checked (RFC 8945 §5.3.1: the first and
//! the last must be signed, others may not be).
//!
//! Records are read in wire form, their names taken out of compression
//! (the types of RFC 1035, and those RFC 3597 §4 lets a receiver expect
//! compressed), so that the copy holds the primary's octets exactly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use hickory_proto::rr::Name;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use crate::change::tsig::{self, Found, Prior};
use crate::clock::{random_id, unix_now};
use crate::zone::journal;

const TYPE_SOA: u16 = 6;
const TYPE_IXFR: u16 = 251;
const TYPE_AXFR: u16 = 252;
const CLASS_IN: u16 = 1;

/// How long connecting, and reading one message, may take.
const WAIT: Duration = Duration::from_secs(10);
/// UDP SOA queries: this many sends, this far apart.
const SOA_TRIES: u32 = 3;
const SOA_WAIT: Duration = Duration::from_secs(2);
/// A zone transfer is given up after this long in all.
const WHOLE: Duration = Duration::from_secs(600);

/// Where a replica's zone comes from and how it is asked.
#[derive(Clone)]
pub struct Primary {
    pub addr: SocketAddr,
    /// The key requests are signed with: name and secret.
    pub key: Option<(Name, Vec<u8>)>,
    /// The address to ask from (dnsd's listening address: primaries allow
    /// transfers by address); unspecified lets the kernel choose.
    pub from: IpAddr,
}

/// What a transfer brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Transferred {
    /// The primary has no newer serial.
    UpToDate(u32),
    /// The difference from the serial asked for to `serial`, condensed:
    /// the records to remove and to add (SOA excepted; `soa` is the new).
    Incremental {
        serial: u32,
        soa: zonefile::Record,
        removed: Vec<zonefile::Record>,
        added: Vec<zonefile::Record>,
    },
    /// The whole zone at `serial`, its SOA first.
    Whole {
        serial: u32,
        records: Vec<zonefile::Record>,
    },
}

/// The serial of `origin`'s SOA at the primary.
pub async fn soa_serial(primary: &Primary, origin: &Name) -> Result<u32> {
    let (query, mac) = request(primary, origin, TYPE_SOA, None)?;
    let socket = UdpSocket::bind((local_for(primary), 0))
        .await
        .context("opening a UDP socket")?;
    let mut reply = vec![0u8; 4096];
    for _ in 0..SOA_TRIES {
        socket
            .send_to(&query, primary.addr)
            .await
            .with_context(|| format!("sending an SOA query to {}", primary.addr))?;
        let got = tokio::time::timeout(SOA_WAIT, async {
            loop {
                let (n, peer) = socket.recv_from(&mut reply).await?;
                if peer == primary.addr && n >= 12 && reply[..2] == query[..2] {
                    return Ok::<usize, std::io::Error>(n);
                }
            }
        })
        .await;
        let Ok(got) = got else { continue };
        let n = got.context("reading the SOA answer")?;
        let answer = &reply[..n];
        if answer[2] & 0x02 != 0 {
            return soa_serial_tcp(primary, origin).await;
        }
        let mut reader = Reader::new(primary, mac.as_deref());
        let records = reader.message(answer, query_id(&query))?;
        reader.finish()?;
        return records
            .iter()
            .find(|r| r.rtype == TYPE_SOA)
            .and_then(zonefile::Record::soa_serial)
            .ok_or_else(|| anyhow!("{} answered the SOA query without an SOA", primary.addr));
    }
    bail!(
        "{} did not answer the SOA query for {origin} ({SOA_TRIES} tries)",
        primary.addr
    )
}

async fn soa_serial_tcp(primary: &Primary, origin: &Name) -> Result<u32> {
    let (query, mac) = request(primary, origin, TYPE_SOA, None)?;
    let mut stream = connect(primary).await?;
    write_message(&mut stream, &query).await?;
    let message = read_message(&mut stream).await?;
    let mut reader = Reader::new(primary, mac.as_deref());
    let records = reader.message(&message, query_id(&query))?;
    reader.finish()?;
    records
        .iter()
        .find(|r| r.rtype == TYPE_SOA)
        .and_then(zonefile::Record::soa_serial)
        .ok_or_else(|| anyhow!("{} answered the SOA query without an SOA", primary.addr))
}

/// Transfers `origin` from the primary: by IXFR from serial `have` when
/// there is one, else by AXFR.
pub async fn transfer(primary: &Primary, origin: &Name, have: Option<u32>) -> Result<Transferred> {
    tokio::time::timeout(WHOLE, transfer_within(primary, origin, have))
        .await
        .map_err(|_| anyhow!("the transfer took more than {} s", WHOLE.as_secs()))?
}

async fn transfer_within(
    primary: &Primary,
    origin: &Name,
    have: Option<u32>,
) -> Result<Transferred> {
    let qtype = if have.is_some() { TYPE_IXFR } else { TYPE_AXFR };
    let (query, mac) = request(primary, origin, qtype, have)?;
    let mut stream = connect(primary).await?;
    write_message(&mut stream, &query).await?;
    let mut reader = Reader::new(primary, mac.as_deref());
    let mut stream_of = Stream::new(have);
    loop {
        let message = read_message(&mut stream).await?;
        let records = reader.message(&message, query_id(&query))?;
        if records.is_empty() && stream_of.records.is_empty() {
            bail!("{} answered the transfer with no records", primary.addr);
        }
        let first_message_only = stream_of.records.is_empty();
        stream_of.records.extend(records);
        if let Some(done) = stream_of.complete(first_message_only)? {
            reader.finish()?;
            return Ok(done);
        }
    }
}

/// The records of a transfer as they arrive, and when they are complete.
struct Stream {
    have: Option<u32>,
    records: Vec<zonefile::Record>,
}

impl Stream {
    fn new(have: Option<u32>) -> Self {
        Self {
            have,
            records: Vec::new(),
        }
    }

    /// The transfer, once its records are all there (RFC 1995 §4, RFC
    /// 5936 §2.2): `first` says they came in one message.
    fn complete(&mut self, first: bool) -> Result<Option<Transferred>> {
        let Some(soa) = self.records.first() else {
            return Ok(None);
        };
        let serial = soa
            .soa_serial()
            .ok_or_else(|| anyhow!("the transfer does not start with an SOA"))?;
        // An IXFR answered with the SOA alone: nothing newer.
        if first && self.records.len() == 1 && self.have.is_some() {
            return Ok(Some(Transferred::UpToDate(serial)));
        }
        // Either form ends with the new SOA again: until a message ends
        // with it, the records so far are not looked through (a million
        // records come in some 1,500 messages).
        if self.records.len() < 2
            || self.records.last().and_then(zonefile::Record::soa_serial) != Some(serial)
        {
            return Ok(None);
        }
        let soas: Vec<usize> = (0..self.records.len())
            .filter(|&i| self.records[i].rtype == TYPE_SOA)
            .collect();
        let incremental = self.have.is_some()
            && self.records.len() > 1
            && self.records[1].rtype == TYPE_SOA
            && self.records[1].soa_serial() != Some(serial);
        if !incremental {
            // AXFR form: the SOA again ends it.
            if soas.len() >= 2 {
                let last = soas[1];
                if last + 1 != self.records.len() {
                    bail!("records after the closing SOA of the transfer");
                }
                let mut records = std::mem::take(&mut self.records);
                records.pop();
                return Ok(Some(Transferred::Whole { serial, records }));
            }
            return Ok(None);
        }
        // IXFR: SOA(new), then (SOA(from), removed..., SOA(to), added...)
        // for each step, then SOA(new). A step's "to" is `serial` only in
        // the last one, so an SOA of `serial` where a step would start is
        // the end.
        // Each step's (removed, added), in order.
        let mut steps: Vec<(Vec<zonefile::Record>, Vec<zonefile::Record>)> = Vec::new();
        let mut in_removed = false;
        for (i, r) in self.records.iter().enumerate().skip(1) {
            if r.rtype != TYPE_SOA {
                let Some((removed, added)) = steps.last_mut() else {
                    bail!("a record before the first step of the IXFR");
                };
                if in_removed { removed } else { added }.push(r.clone());
                continue;
            }
            if !in_removed && r.soa_serial() == Some(serial) && !steps.is_empty() {
                if i + 1 != self.records.len() {
                    bail!("records after the closing SOA of the transfer");
                }
                let (removed, added) = journal::condense(
                    steps
                        .iter()
                        .map(|(removed, added)| (&removed[..], &added[..])),
                );
                return Ok(Some(Transferred::Incremental {
                    serial,
                    soa: self.records[0].clone(),
                    removed,
                    added,
                }));
            }
            in_removed = !in_removed;
            if in_removed {
                steps.push((Vec::new(), Vec::new()));
            }
        }
        Ok(None)
    }
}

/// Checks the messages of one answer: IDs, rcodes, signatures.
struct Reader<'p> {
    primary: &'p Primary,
    /// The MAC the next signed message continues from.
    prior: Option<Vec<u8>>,
    /// Whether a signed message was seen (the prior is then a message's).
    signed_once: bool,
    /// The messages since the last signed one, as received.
    unsigned: Vec<u8>,
}

impl<'p> Reader<'p> {
    fn new(primary: &'p Primary, request_mac: Option<&[u8]>) -> Self {
        Self {
            primary,
            prior: request_mac.map(<[u8]>::to_vec),
            signed_once: false,
            unsigned: Vec::new(),
        }
    }

    /// The answer records of `message`, an answer to the request with ID
    /// `id`.
    fn message(&mut self, message: &[u8], id: u16) -> Result<Vec<zonefile::Record>> {
        let from = self.primary.addr;
        if message.len() < 12 || u16::from_be_bytes([message[0], message[1]]) != id {
            bail!("{from} sent a message that is not an answer to the request");
        }
        if message[2] & 0x80 == 0 || message[2] & 0x78 != 0 {
            bail!("{from} sent a message that is not a QUERY response");
        }
        if let Some((_, secret)) = &self.primary.key {
            match tsig::find(message) {
                Found::Signed(sig) => {
                    let Some(prior) = &self.prior else {
                        bail!("no request MAC to check {from}'s signature against");
                    };
                    let prior = if self.signed_once {
                        Prior::Message(prior)
                    } else {
                        Prior::Request(prior)
                    };
                    let mac = tsig::verify_response(
                        message,
                        &self.unsigned,
                        &sig,
                        secret,
                        prior,
                        unix_now(),
                    )
                    .map_err(|e| anyhow!("{from}'s answer is not signed by the key: {e:?}"))?;
                    self.prior = Some(mac);
                    self.signed_once = true;
                    self.unsigned.clear();
                }
                Found::Unsigned if self.signed_once => {
                    if self.unsigned.len() > 100 * 65_536 {
                        bail!("{from} sent 100 messages without a signature");
                    }
                    self.unsigned.extend_from_slice(message);
                }
                Found::Unsigned => bail!(
                    "{from} answered without a signature (rcode {}): is the key right?",
                    message[3] & 0x0f
                ),
                Found::Malformed(why) => bail!("{from} sent a malformed signature: {why}"),
            }
        }
        match message[3] & 0x0f {
            0 => {}
            5 => bail!("{from} refused the request (REFUSED): does it allow this address or key?"),
            9 => bail!(
                "{from} answered NOTAUTH: it is not authoritative for the zone, or the key is wrong"
            ),
            rcode => bail!("{from} answered with rcode {rcode}"),
        }
        answers(message).ok_or_else(|| anyhow!("{from} sent a message that does not parse"))
    }

    /// The answer is over: its last message must have been signed.
    fn finish(&self) -> Result<()> {
        if self.primary.key.is_some() && !self.unsigned.is_empty() {
            bail!("the last message from {} is not signed", self.primary.addr);
        }
        Ok(())
    }
}

/// The records of the answer section of `message`, names decompressed.
fn answers(message: &[u8]) -> Option<Vec<zonefile::Record>> {
    let count = |i: usize| usize::from(u16::from_be_bytes([message[i], message[i + 1]]));
    let (questions, answers) = (count(4), count(6));
    let mut at = 12;
    for _ in 0..questions {
        at = read_name(message, at, &mut Vec::new())? + 4;
    }
    let mut records = Vec::with_capacity(answers);
    for _ in 0..answers {
        let mut owner = Vec::with_capacity(64);
        at = read_name(message, at, &mut owner)?;
        let fixed = message.get(at..at + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let class = u16::from_be_bytes([fixed[2], fixed[3]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let start = at + 10;
        let end = start + len;
        message.get(start..end)?;
        at = end;
        if class != CLASS_IN {
            return None;
        }
        let rdata = decompressed_rdata(message, rtype, start, end)?;
        let (owner, _) = zonefile::Name::from_wire_prefix(&owner)?;
        records.push(zonefile::Record {
            owner,
            class,
            ttl,
            rtype,
            rdata,
        });
    }
    Some(records)
}

/// One field of an RDATA whose names may arrive compressed.
#[derive(Clone, Copy)]
enum Field {
    Name,
    Octets(usize),
    /// A <character-string>: a length octet and that many octets.
    Text,
}

/// The layout of the types whose RDATA names may be compressed: those of
/// RFC 1035 (NS, MD, MF, CNAME, SOA, MB, MG, MR, PTR, MINFO, MX) and those
/// RFC 3597 §4 names (RP, AFSDB, RT, PX, SRV, NAPTR). Others are copied.
fn layout(rtype: u16) -> Option<&'static [Field]> {
    use Field::*;
    Some(match rtype {
        2..=5 | 7..=9 | 12 => &[Name],
        6 => &[Name, Name, Octets(20)],
        14 | 17 => &[Name, Name],
        15 | 18 | 21 => &[Octets(2), Name],
        26 => &[Octets(2), Name, Name],
        33 => &[Octets(6), Name],
        35 => &[Octets(4), Text, Text, Text, Name],
        _ => return None,
    })
}

fn decompressed_rdata(message: &[u8], rtype: u16, start: usize, end: usize) -> Option<Vec<u8>> {
    let Some(fields) = layout(rtype) else {
        return Some(message[start..end].to_vec());
    };
    let mut out = Vec::with_capacity(end - start + 32);
    let mut at = start;
    for field in fields {
        at = match field {
            Field::Name => read_name(message, at, &mut out)?,
            Field::Octets(n) => {
                out.extend_from_slice(message.get(at..at + n)?);
                at + n
            }
            Field::Text => {
                let n = usize::from(*message.get(at)?);
                out.extend_from_slice(message.get(at..at + 1 + n)?);
                at + 1 + n
            }
        };
        if at > end {
            return None;
        }
    }
    (at == end).then_some(out)
}

/// Appends the name at `at` of `message`, uncompressed, to `out`; returns
/// where the name ends in the message (after its pointer, if any).
fn read_name(message: &[u8], mut at: usize, out: &mut Vec<u8>) -> Option<usize> {
    let mut end = None;
    let mut jumps = 0;
    let mut length = 0;
    loop {
        let len = *message.get(at)?;
        match len {
            0 => {
                out.push(0);
                return Some(end.unwrap_or(at + 1));
            }
            l if l & 0xc0 == 0xc0 => {
                let target = usize::from(u16::from_be_bytes([l & 0x3f, *message.get(at + 1)?]));
                end.get_or_insert(at + 2);
                jumps += 1;
                // Pointers go backwards; a loop would never end.
                if jumps > 127 || target >= at {
                    return None;
                }
                at = target;
            }
            l if l & 0xc0 != 0 => return None,
            l => {
                let label = message.get(at..at + 1 + usize::from(l))?;
                length += label.len();
                if length > 254 {
                    return None;
                }
                out.extend_from_slice(label);
                at += label.len();
            }
        }
    }
}

/// A request for `origin`'s `qtype`, signed if the primary has a key; an
/// IXFR carries serial `have` in an SOA in its authority section. Returns
/// it and its MAC.
fn request(
    primary: &Primary,
    origin: &Name,
    qtype: u16,
    have: Option<u32>,
) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(&random_id().to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 1, 0, 0]);
    let ixfr = qtype == TYPE_IXFR;
    m.extend_from_slice(&u16::from(ixfr).to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    let owner = crate::zone::name_key::NameKey::new(origin)
        .ok_or_else(|| anyhow!("{origin} is not a zone name"))?;
    m.extend_from_slice(owner.as_bytes());
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    if let (true, Some(serial)) = (ixfr, have) {
        // The asker's SOA: only its serial matters (RFC 1995 §3).
        m.extend_from_slice(&[0xc0, 0x0c, 0, 6, 0, 1, 0, 0, 0, 0, 0, 22, 0, 0]);
        m.extend_from_slice(&serial.to_be_bytes());
        m.extend_from_slice(&[0; 16]);
    }
    let mac = match &primary.key {
        Some((name, secret)) => Some(
            tsig::sign(&mut m, name, secret, Prior::None, unix_now(), None)
                .ok_or_else(|| anyhow!("could not sign the request"))?,
        ),
        None => None,
    };
    Ok((m, mac))
}

fn query_id(query: &[u8]) -> u16 {
    u16::from_be_bytes([query[0], query[1]])
}

fn local_for(primary: &Primary) -> IpAddr {
    match (primary.from, primary.addr) {
        (IpAddr::V4(ip), SocketAddr::V4(_)) => IpAddr::V4(ip),
        (IpAddr::V6(ip), SocketAddr::V6(_)) => IpAddr::V6(ip),
        (_, SocketAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (_, SocketAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

async fn connect(primary: &Primary) -> Result<TcpStream> {
    let socket = match primary.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .context("opening a TCP socket")?;
    socket
        .bind(SocketAddr::new(local_for(primary), 0))
        .with_context(|| format!("binding to {}", local_for(primary)))?;
    tokio::time::timeout(WAIT, socket.connect(primary.addr))
        .await
        .map_err(|_| anyhow!("connecting to {} timed out", primary.addr))?
        .with_context(|| format!("connecting to {}", primary.addr))
}

async fn write_message(stream: &mut TcpStream, message: &[u8]) -> Result<()> {
    let mut framed = Vec::with_capacity(2 + message.len());
    framed.extend_from_slice(&u16::try_from(message.len())?.to_be_bytes());
    framed.extend_from_slice(message);
    tokio::time::timeout(WAIT, stream.write_all(&framed))
        .await
        .map_err(|_| anyhow!("sending the request timed out"))?
        .context("sending the request")
}

async fn read_message(stream: &mut TcpStream) -> Result<Vec<u8>> {
    tokio::time::timeout(WAIT, async {
        let len = stream.read_u16().await?;
        let mut message = vec![0; usize::from(len)];
        stream.read_exact(&mut message).await?;
        Ok::<_, std::io::Error>(message)
    })
    .await
    .map_err(|_| anyhow!("no message from the primary for {} s", WAIT.as_secs()))?
    .context("reading from the primary (it closed the connection?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(text: &str) -> zonefile::Record {
        let origin = zonefile::Name::parse(b"example.org.", &zonefile::Name::root()).unwrap();
        let mut files = zonefile::NoIncludes;
        let zone = zonefile::read(
            text.as_bytes(),
            std::path::Path::new("t.zone"),
            &origin,
            &mut files,
        )
        .unwrap();
        zone.records[0].record.clone()
    }

    fn soa(serial: u32) -> zonefile::Record {
        record(&format!("@ 60 IN SOA ns1 host {serial} 60 30 600 60\n"))
    }

    fn stream(have: Option<u32>, records: Vec<zonefile::Record>) -> Option<Transferred> {
        let mut s = Stream::new(have);
        s.records = records;
        s.complete(false).unwrap()
    }

    #[test]
    fn an_ixfr_of_several_steps_is_condensed() {
        let a1 = record("a 60 IN A 198.18.0.1\n");
        let a2 = record("a 60 IN A 198.18.0.2\n");
        let a3 = record("a 60 IN A 198.18.0.3\n");
        let b = record("b 60 IN TXT \"x\"\n");
        // 1 -> 2: a1 becomes a2; 2 -> 3: a2 becomes a3, b added.
        let all = vec![
            soa(3),
            soa(1),
            a1.clone(),
            soa(2),
            a2.clone(),
            soa(2),
            a2.clone(),
            soa(3),
            a3.clone(),
            b.clone(),
            soa(3),
        ];
        // Not complete without its closing SOA.
        assert_eq!(stream(Some(1), all[..10].to_vec()), None);
        assert_eq!(
            stream(Some(1), all),
            Some(Transferred::Incremental {
                serial: 3,
                soa: soa(3),
                removed: vec![a1],
                added: vec![a3, b],
            })
        );
    }

    #[test]
    fn an_axfr_ends_at_its_second_soa_and_an_ixfr_may_get_one() {
        let a = record("a 60 IN A 198.18.0.1\n");
        let whole = vec![soa(7), a.clone(), soa(7)];
        let expected = Some(Transferred::Whole {
            serial: 7,
            records: vec![soa(7), a.clone()],
        });
        assert_eq!(stream(None, whole.clone()), expected);
        assert_eq!(stream(Some(3), whole), expected);
        assert_eq!(stream(None, vec![soa(7), a]), None);
        let mut s = Stream::new(Some(7));
        s.records = vec![soa(7)];
        assert_eq!(s.complete(true).unwrap(), Some(Transferred::UpToDate(7)));
    }

    #[test]
    fn compressed_names_in_rdata_are_expanded_and_loops_refused() {
        // Header, question example.org. SOA, then an MX answer whose owner
        // and exchange point into the question.
        let mut m = vec![0, 1, 0x84, 0, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(b"\x07example\x03org\x00\x00\x06\x00\x01");
        m.extend_from_slice(&[0xc0, 12, 0, 15, 0, 1, 0, 0, 0, 60, 0, 7, 0, 10]);
        m.extend_from_slice(b"\x02mx\xc0\x0c");
        let records = answers(&m).unwrap();
        assert_eq!(
            zonefile::write_record(&records[0]),
            "example.org. 60 IN MX 10 mx.example.org."
        );
        // A pointer to itself.
        let mut looped = m.clone();
        let at = looped.len() - 2;
        looped[at + 1] = at as u8;
        assert!(answers(&looped).is_none());
    }
}
