//! `[service.health]`: how dnsd checks a service's addresses, and when an
//! address leaves the answers and comes back.
//!
//! ```toml
//! [service.health]
//! check = "http"          # "tcp" | "http" | "none" (default)
//! port = 80               # default 80
//! path = "/healthz"       # http only; default "/"
//! expect = "200-399"      # http only: the statuses that pass; default 200-399
//! interval = "2s"         # default 5s; "500ms", "2s", "1m" or seconds as a number
//! timeout = "1s"          # default 2s; less than the interval
//! rise = 2                # consecutive passes to come back; default 2
//! fall = 3                # consecutive failures to go out; default 3
//! degraded_ttl = 10       # the TTL while any address is out; default: the service's
//! ```

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::problems::Problems;

/// What a check does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// A TCP connection to the port opens.
    Tcp,
    /// `GET path` answers with a status in `expect` (inclusive).
    Http { path: String, expect: (u16, u16) },
}

/// A service's health check, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    pub kind: CheckKind,
    pub port: u16,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub degraded_ttl: Option<u32>,
}

/// The longest interval: a check rarer than this hardly deserves the name.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Checks more often than this are a storm, not a check.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The section as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    check: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    path: Option<Spanned<String>>,
    expect: Option<Spanned<String>>,
    interval: Option<Spanned<toml::Value>>,
    timeout: Option<Spanned<toml::Value>>,
    rise: Option<Spanned<u32>>,
    fall: Option<Spanned<u32>>,
    degraded_ttl: Option<Spanned<u32>>,
}

/// The check of service `i`; `None` for `check = "none"` (or no section).
pub(super) fn parse(raw: &RawHealth, i: usize, problems: &mut Problems<'_>) -> Option<HealthCheck> {
    let field = |f: &str| format!("service[{i}].health.{f}");
    let Some(check) = &raw.check else {
        // A section without `check` would silently check nothing.
        let span = [
            raw.port.as_ref().map(|v| v.span()),
            raw.path.as_ref().map(|v| v.span()),
            raw.interval.as_ref().map(|v| v.span()),
        ]
        .into_iter()
        .flatten()
        .next()
        .unwrap_or_default();
        problems.at(
            span,
            field("check"),
            "missing: \"tcp\", \"http\" or \"none\"",
        );
        return None;
    };
    let kind = check.get_ref().as_str();
    let http_only = [("path", raw.path.as_ref()), ("expect", raw.expect.as_ref())];
    let kind = match kind {
        "none" => return None,
        "tcp" => {
            for (name, value) in http_only {
                if let Some(v) = value {
                    problems.at(v.span(), field(name), "only an http check has it");
                }
            }
            CheckKind::Tcp
        }
        "http" => {
            let path = raw
                .path
                .as_ref()
                .map_or("/".to_string(), |p| p.get_ref().clone());
            if let Some(p) = &raw.path
                && (!path.starts_with('/')
                    || path.chars().any(|c| c.is_whitespace() || c.is_control()))
            {
                problems.at(
                    p.span(),
                    field("path"),
                    "a path starts with / and has no spaces",
                );
            }
            let expect = match &raw.expect {
                None => (200, 399),
                Some(e) => match statuses(e.get_ref()) {
                    Ok(range) => range,
                    Err(m) => {
                        problems.at(e.span(), field("expect"), m);
                        (200, 399)
                    }
                },
            };
            CheckKind::Http { path, expect }
        }
        other => {
            problems.at(
                check.span(),
                field("check"),
                format!("{other:?} is not a check: \"tcp\", \"http\" or \"none\""),
            );
            return None;
        }
    };
    let port = raw.port.as_ref().map_or(80, |p| *p.get_ref());
    if let Some(p) = &raw.port
        && *p.get_ref() == 0
    {
        problems.at(p.span(), field("port"), "port 0 cannot be checked");
    }
    let interval = duration(
        raw.interval.as_ref(),
        Duration::from_secs(5),
        &field("interval"),
        problems,
    );
    let timeout = duration(
        raw.timeout.as_ref(),
        Duration::from_secs(2),
        &field("timeout"),
        problems,
    );
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval)
        && let Some(v) = &raw.interval
    {
        problems.at(
            v.span(),
            field("interval"),
            format!("between {MIN_INTERVAL:?} and {MAX_INTERVAL:?}"),
        );
    }
    if timeout >= interval || timeout.is_zero() {
        let span = raw
            .timeout
            .as_ref()
            .or(raw.interval.as_ref())
            .map(|v| v.span())
            .unwrap_or_default();
        problems.at(
            span,
            field("timeout"),
            format!("{timeout:?} must be above zero and below the interval ({interval:?})"),
        );
    }
    let count =
        |v: &Option<Spanned<u32>>, name: &str, default: u32, problems: &mut Problems<'_>| {
            let Some(v) = v else {
                return default;
            };
            if !(1..=100).contains(v.get_ref()) {
                problems.at(v.span(), field(name), "between 1 and 100 checks");
            }
            *v.get_ref()
        };
    let rise = count(&raw.rise, "rise", 2, problems);
    let fall = count(&raw.fall, "fall", 3, problems);
    let degraded_ttl = raw.degraded_ttl.as_ref().map(|t| *t.get_ref());
    Some(HealthCheck {
        kind,
        port,
        interval,
        timeout,
        rise,
        fall,
        degraded_ttl,
    })
}

/// `"200-399"` or `"204"`.
fn statuses(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{text:?} is not an HTTP status or range of them (\"200-399\", \"204\")");
    let (lo, hi) = text
        .trim()
        .split_once('-')
        .unwrap_or((text.trim(), text.trim()));
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// A duration written `"500ms"`, `"2s"`, `"1m"`, or as seconds (`2`, `0.5`).
fn duration(
    value: Option<&Spanned<toml::Value>>,
    default: Duration,
    field: &str,
    problems: &mut Problems<'_>,
) -> Duration {
    let Some(value) = value else {
        return default;
    };
    let parsed = match value.get_ref() {
        toml::Value::Integer(s) if *s > 0 => Some(Duration::from_secs(*s as u64)),
        toml::Value::Float(s) => Duration::try_from_secs_f64(*s).ok(),
        toml::Value::String(text) => parse_duration(text),
        _ => None,
    };
    parsed.unwrap_or_else(|| {
        problems.at(
            value.span(),
            field,
            "a duration: \"500ms\", \"2s\", \"1m\", or a number of seconds",
        );
        default
    })
}

fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_seconds() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2 s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("2"), None, "a string needs its unit");
        assert_eq!(parse_duration("2d"), None);
        assert_eq!(parse_duration("0s"), None);
    }

    #[test]
    fn statuses_are_one_or_a_range() {
        assert_eq!(statuses("200-399"), Ok((200, 399)));
        assert_eq!(statuses("204"), Ok((204, 204)));
        assert!(statuses("399-200").is_err());
        assert!(statuses("ok").is_err());
        assert!(statuses("600").is_err());
    }
}
