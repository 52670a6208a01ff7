//! NOTIFY out (RFC 1996): every secondary of a zone is told when the zone's
//! serial changes, however it changed — the API, an RFC 2136 update, a
//! reload, a rollback — and once at start, so that it transfers the zone
//! now rather than at its next SOA refresh.
//!
//! The served snapshot is looked at every 50 ms (a pointer compared; the
//! zones' serials only when it changed); a zone whose
//! serial differs from the one last notified is notified to each of its
//! secondaries, over UDP from dnsd's listening address, signed with the
//! secondary's key if it has one, and sent again after 1, 2, 4, 8 and 16 s
//! until the secondary answers. One that never answers is logged and
//! given up on; nothing waits for it. A newer serial replaces a NOTIFY
//! still being retried.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cutover_workspace::Secondary;
use hickory_proto::rr::Name;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::change::tsig::{self, Prior};
use crate::clock::{random_id, unix_now};
use crate::snapshot::{SharedSnapshot, Zone};
use crate::transfer::Transfers;
use crate::zone::name_key::NameKey;

/// How often the served snapshot is looked at.
const LOOK: Duration = Duration::from_millis(50);
/// The waits between the sends of one NOTIFY: 5 retries, 31 s in all.
const RETRIES: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
];

const OPCODE_NOTIFY: u8 = 4;

/// Runs until the process ends: notifies the secondaries of every zone of
/// `snapshot` whose serial changes. `from` is the address dnsd listens on
/// (NOTIFY is sent from its IP: secondaries accept it from their primary).
pub async fn run(snapshot: SharedSnapshot, transfers: Arc<Transfers>, from: IpAddr) {
    // (zone, secondary) -> the serial being notified and its sender.
    let mut sending: HashMap<(String, SocketAddr), (u32, JoinHandle<()>)> = HashMap::new();
    let mut seen = None;
    loop {
        let now = snapshot.load_full();
        if seen.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &now)) {
            seen = Some(Arc::clone(&now));
            let config = {
                let transfers = Arc::clone(&transfers);
                tokio::task::spawn_blocking(move || transfers.config())
                    .await
                    .ok()
                    .flatten()
            };
            if let Some(config) = config {
                for (_, zone) in now.zones() {
                    let origin = zone.origin.to_ascii().to_ascii_lowercase();
                    let Some(serial) = zone.serial() else {
                        continue;
                    };
                    for secondary in config.secondaries_of(&origin) {
                        let at = (origin.clone(), secondary.address);
                        if sending.get(&at).is_some_and(|(s, _)| *s == serial) {
                            continue;
                        }
                        let key = secondary.tsig_key.as_deref().and_then(|k| {
                            config
                                .tsig_key(k)
                                .map(|k| (k.name.clone(), k.secret.clone()))
                        });
                        let message = notify_message(zone, random_id());
                        let task = tokio::spawn(send(
                            message,
                            secondary.clone(),
                            key,
                            from,
                            origin.clone(),
                            serial,
                            Arc::clone(&transfers),
                        ));
                        if let Some((_, older)) = sending.insert(at, (serial, task)) {
                            older.abort();
                        }
                    }
                }
            }
        }
        tokio::time::sleep(LOOK).await;
    }
}

/// A NOTIFY for `zone`: its name and SOA as the question, and its SOA (with
/// the new serial) in the answer section.
fn notify_message(zone: &Zone, id: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(&id.to_be_bytes());
    // Opcode NOTIFY, AA.
    m.push((OPCODE_NOTIFY << 3) | 0x04);
    m.push(0);
    let answers = u16::from(zone.soa().is_some());
    for count in [1, answers, 0, 0] {
        m.extend_from_slice(&count.to_be_bytes());
    }
    let owner = NameKey::new(&zone.origin);
    let owner = owner.as_ref().map_or(&[][..], NameKey::as_bytes);
    m.extend_from_slice(owner);
    m.push(0);
    m.extend_from_slice(&[0, 6, 0, 1]);
    if let Some(soa) = zone.soa()
        && let Some(rdata) = soa.rdatas.wire().next()
    {
        // Owner: a pointer to the question's name.
        m.extend_from_slice(&[0xc0, 0x0c, 0, 6, 0, 1]);
        m.extend_from_slice(&soa.ttl.to_be_bytes());
        m.extend_from_slice(rdata);
    }
    m
}

/// Sends `message` to `secondary` until it answers or the retries run out.
async fn send(
    mut message: Vec<u8>,
    secondary: Secondary,
    key: Option<(String, Vec<u8>)>,
    from: IpAddr,
    origin: String,
    serial: u32,
    transfers: Arc<Transfers>,
) {
    let to = secondary.address;
    let local = match (from, to) {
        (IpAddr::V4(ip), SocketAddr::V4(_)) if !ip.is_unspecified() => IpAddr::V4(ip),
        (IpAddr::V6(ip), SocketAddr::V6(_)) if !ip.is_unspecified() => IpAddr::V6(ip),
        (_, SocketAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (_, SocketAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = match UdpSocket::bind((local, 0)).await {
        Ok(s) => s,
        Err(e) => {
            warn!(%to, zone = %origin, %e, "cannot open a socket to send NOTIFY");
            return;
        }
    };
    if let Some((name, secret)) = &key {
        let signed = Name::from_ascii(name).ok().and_then(|name| {
            tsig::sign(&mut message, &name, secret, Prior::None, unix_now(), None)
        });
        if signed.is_none() {
            warn!(%to, zone = %origin, "could not sign a NOTIFY; it is not sent");
            return;
        }
    }
    let id = [message[0], message[1]];
    for (attempt, wait) in RETRIES.iter().enumerate() {
        if let Err(e) = socket.send_to(&message, to).await {
            debug!(%to, zone = %origin, %e, "sending NOTIFY failed");
        }
        let mut reply = [0u8; 512];
        let answered = tokio::time::timeout(*wait, async {
            loop {
                match socket.recv_from(&mut reply).await {
                    Ok((n, peer)) if peer == to && n >= 12 && reply[..2] == id => {
                        return Some(reply[3] & 0x0f);
                    }
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            }
        })
        .await;
        match answered {
            Ok(Some(0)) => {
                transfers.acknowledged(&origin, to.ip(), serial);
                info!(%to, zone = %origin, serial, "secondary acknowledged NOTIFY");
                return;
            }
            Ok(Some(rcode)) => {
                warn!(%to, zone = %origin, serial, rcode, "secondary refused NOTIFY");
                return;
            }
            _ => debug!(%to, zone = %origin, serial, attempt, "no answer to NOTIFY yet"),
        }
    }
    warn!(%to, zone = %origin, serial, "secondary never answered NOTIFY; it will find the change at its next SOA refresh");
}
