//! Writing a changed zone back to its file as a new workspace generation:
//! the one path by which the control API and dynamic updates (RFC 2136)
//! change zone data. A zone is rewritten from its parsed records, read back
//! to prove the text means exactly those records, committed with a
//! validator that loads the whole staged workspace as a reload would, and
//! only then served.

use std::path::Path;
use std::sync::Arc;

use cutover_workspace::{
    ConfigErrors, FileChange, Generation, HistoryError, Workspace, ZONES_DIR, ZoneFile,
};
use hickory_proto::rr::{Name, RData, Record};

use crate::zone::journal::JournalView;
use crate::zone::{self, records};

/// Held by whoever changes the live workspace (an API request, a dynamic
/// update) from reading it to serving the result: a change is computed
/// from the files it replaces, so two at once would lose one. The
/// workspace's own lock only covers the commit itself.
pub type ChangeLock = Arc<tokio::sync::Mutex<()>>;

/// One record as a comparable line of zone-file text, in the presentation
/// form NSD, Knot and dnsd read to the same octets (ASCII, `\DDD` for
/// other octets, RFC 3597 generic rdata where a type has no syntax).
pub fn record_line(r: &Record) -> String {
    records::from_hickory(r).map_or_else(String::new, |z| zonefile::write_record(&z))
}

/// Rdata in zone-file syntax.
pub fn rdata_text(data: &RData) -> String {
    records::rdata_text(data.record_type(), data)
}

/// Adds one to the SOA serial (RFC 1982 arithmetic wraps): secondaries
/// and caches notice a change by it.
pub fn bump_serial(records: &mut [Record]) {
    for r in records {
        if let RData::SOA(soa) = &mut r.data {
            soa.serial = soa.serial.wrapping_add(1);
        }
    }
}

/// The SOA serial among `records`, if there is an SOA.
pub fn serial(records: &[Record]) -> Option<u32> {
    records.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}

/// The sorted, de-duplicated zone-file lines of `records`: two record
/// lists with the same lines are the same zone.
pub fn lines(records: &[Record]) -> Vec<String> {
    let mut lines: Vec<String> = records.iter().map(record_line).collect();
    lines.sort();
    lines.dedup();
    lines
}

/// The text of a zone file holding exactly `records`, headed by a comment
/// naming `writer`. Errs (naming a record) when the text would not read
/// back as the same records: then nothing may be written.
pub fn render(origin: &Name, records: &[Record], writer: &str) -> Result<String, String> {
    let mut text = format!(
        "; written by {writer}\n$ORIGIN {}\n",
        crate::zone::records::zone_name(origin)
    );
    let lines = lines(records);
    for l in &lines {
        text.push_str(l);
        text.push('\n');
    }
    let back = zone::parse_records(&text, origin)
        .map_err(|e| format!("the rewritten zone does not parse: {e}"))?;
    let back = self::lines(&back);
    if back != lines {
        let differs = lines
            .iter()
            .find(|l| !back.contains(l))
            .or_else(|| back.iter().find(|l| !lines.contains(l)))
            .cloned()
            .unwrap_or_default();
        return Err(format!(
            "the zone cannot be rewritten without changing other records (`{differs}` does not read back); edit the zone file"
        ));
    }
    Ok(text)
}

/// Commits `text` as the new content of `zone_file`, refused unless the
/// staged workspace loads (`validator`). Blocking I/O.
pub fn commit(
    workspace: &Workspace,
    zone_file: &ZoneFile,
    text: Vec<u8>,
    message: &str,
) -> Result<Generation, HistoryError> {
    let Some(file_name) = zone_file.path.file_name() else {
        return Err(HistoryError::Unmanaged(zone_file.path.clone()));
    };
    let change = FileChange {
        path: Path::new(ZONES_DIR).join(file_name),
        content: Some(text),
    };
    workspace.commit(&[change], message, validator(workspace))
}

/// The commit validator for a change to the live `workspace`: the staged
/// workspace must load as a reload would, and break no zone that loads
/// now. A zone that is already broken does not block changes to the
/// others (it is not served from its file either way).
pub fn validator(
    workspace: &Workspace,
) -> impl FnOnce(&Workspace) -> Result<(), ConfigErrors> + use<> {
    let broken_now = zone::broken_zones(workspace.root()).unwrap_or_default();
    // The staged files with the live journal: zone files dnsd wrote carry
    // the changesets that apply on top of them.
    let journals = JournalView::all(workspace.clone());
    move |staged| {
        let loaded = zone::load_with(staged.root(), &journals)?;
        let newly: Vec<_> = loaded
            .broken
            .into_iter()
            .filter(|z| !broken_now.contains(&z.origin))
            .flat_map(|z| z.errors)
            .collect();
        if newly.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(newly))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &str) -> (Name, Vec<Record>) {
        let origin = Name::from_ascii("example.test.").unwrap();
        let records = zone::parse_records(text, &origin).unwrap();
        (origin, records)
    }

    #[test]
    fn a_rendered_zone_reads_back_as_the_same_records() {
        let (origin, mut recs) = records(
            "@ 60 IN SOA ns1 hostmaster 7 3600 600 86400 60\n@ 60 IN NS ns1\nt 30 IN TXT \"a \\\"b\\\"\" \"c\"\n",
        );
        bump_serial(&mut recs);
        assert_eq!(serial(&recs), Some(8));
        let text = render(&origin, &recs, "a test").unwrap();
        assert!(text.starts_with("; written by a test\n$ORIGIN example.test.\n"));
        let (_, back) = records(&text);
        assert_eq!(lines(&back), lines(&recs));
    }

    #[test]
    fn a_zone_with_dname_txt_hinfo_caa_https_is_rewritten_exactly() {
        let (origin, recs) = records(
            "@ 60 IN SOA ns1 hostmaster 7 3600 600 86400 60\n@ 60 IN NS ns1\nold 60 IN DNAME new.example.test.\nt 60 IN TXT \"a b\" \"c\\\"d\"\ncaa 60 IN CAA 0 issue \"ca.test\"\nmx 60 IN MX 10 ns1\nh 60 IN HINFO \"cpu x\" \"os \\\"y\\\"\"\nw 60 IN HTTPS 1 . alpn=h2,h3\n",
        );
        let text = render(&origin, &recs, "a test").unwrap();
        assert!(
            text.contains("old.example.test. 60 IN DNAME new.example.test.\n"),
            "{text}"
        );
        let (_, back) = records(&text);
        assert_eq!(lines(&back), lines(&recs));
    }

    #[test]
    fn the_serial_wraps() {
        let (_, mut recs) = records("@ 60 IN SOA ns1 hostmaster 4294967295 1 1 1 1\n");
        bump_serial(&mut recs);
        assert_eq!(serial(&recs), Some(0));
    }
}
