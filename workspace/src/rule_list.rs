//! Editing the `[[rule]]` list of a `redirector.toml` text one rule at a
//! time, by name, for tools that change rules rather than files (the
//! redirector's control API). The result is text to commit as a new
//! generation; `Workspace::commit` validates it like any other change.

/// The `[[rule]]` tables of a `redirector.toml` text, and the rest of the
/// file (`[nat]`, `[timeouts]`), which an edit keeps. Comments are not kept:
/// the text is written back from the parsed tables.
#[derive(Debug, Clone)]
pub struct RuleList {
    rest: toml::Table,
    rules: Vec<toml::Value>,
}

/// A `[[rule]]`'s fields as text, the way `redirector.toml` writes them.
#[derive(Debug, Clone, Default)]
pub struct RuleFields<'a> {
    /// `IP:PORT`, or a bare `IP` with `ports`.
    pub from: &'a str,
    pub to: &'a str,
    pub ports: &'a [u16],
    /// None: the default, TCP.
    pub protocols: &'a [&'a str],
    /// None: every client.
    pub share: Option<u8>,
}

/// Why a `redirector.toml` text cannot be edited rule by rule (the caller
/// names the file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleListError {
    #[error("does not parse, fix it by hand first: {0}")]
    NotToml(String),
    #[error("`rule` is not a list of [[rule]] tables")]
    NotAList,
}

impl RuleList {
    /// Reads the rules of `text`; an empty text has none.
    pub fn parse(text: &str) -> Result<Self, RuleListError> {
        let mut rest: toml::Table =
            toml::from_str(text).map_err(|e| RuleListError::NotToml(e.to_string()))?;
        let rules = match rest.remove("rule") {
            None => Vec::new(),
            Some(toml::Value::Array(rules)) => rules,
            Some(_) => return Err(RuleListError::NotAList),
        };
        Ok(Self { rest, rules })
    }

    /// Makes the rule named `name` the one `fields` describe: in its place
    /// when a rule of that name exists, else at the end.
    pub fn put(&mut self, name: &str, fields: &RuleFields) {
        let mut rule = toml::Table::new();
        rule.insert("name".into(), name.into());
        rule.insert("from".into(), fields.from.into());
        rule.insert("to".into(), fields.to.into());
        if !fields.ports.is_empty() {
            let ports = fields
                .ports
                .iter()
                .map(|&p| toml::Value::from(i64::from(p)));
            rule.insert("ports".into(), toml::Value::Array(ports.collect()));
        }
        if !fields.protocols.is_empty() {
            let names = fields.protocols.iter().map(|&p| toml::Value::from(p));
            rule.insert("proto".into(), toml::Value::Array(names.collect()));
        }
        if let Some(share) = fields.share {
            rule.insert("share".into(), toml::Value::from(i64::from(share)));
        }
        let rule = toml::Value::Table(rule);
        match self
            .rules
            .iter_mut()
            .find(|r| name_of(r).as_deref() == Some(name))
        {
            Some(existing) => *existing = rule,
            None => self.rules.push(rule),
        }
    }

    /// Removes the rules named `name`; whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| name_of(r).as_deref() != Some(name));
        self.rules.len() != before
    }

    /// The edited file's text.
    pub fn to_text(mut self) -> Result<String, toml::ser::Error> {
        if !self.rules.is_empty() {
            self.rest
                .insert("rule".into(), toml::Value::Array(self.rules));
        }
        toml::to_string(&self.rest)
    }
}

/// A rule's name as the format defines it: `name`, else `from` (see
/// `redirector::parse`).
fn name_of(rule: &toml::Value) -> Option<String> {
    let t = rule.as_table()?;
    t.get("name")
        .or_else(|| t.get("from"))
        .and_then(|v| v.as_str())
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "[timeouts]\nsyn = 30\n\n[[rule]]\nfrom = \"198.18.0.2:80\"\nto = \"198.18.0.3:80\"\n\n[[rule]]\nname = \"www\"\nfrom = \"198.18.0.2:81\"\nto = \"198.18.0.3:80\"\n";

    fn fields<'a>(from: &'a str, to: &'a str) -> RuleFields<'a> {
        RuleFields {
            from,
            to,
            ..Default::default()
        }
    }

    fn reparsed(list: RuleList) -> crate::RedirectorConfig {
        let text = list.to_text().unwrap();
        crate::redirector::parse(std::path::Path::new("redirector.toml"), &text).unwrap()
    }

    #[test]
    fn a_rule_is_named_by_name_else_by_from() {
        let mut list = RuleList::parse(TWO).unwrap();
        assert!(list.remove("198.18.0.2:80"));
        assert!(!list.remove("198.18.0.2:81"), "that one is called www");
        assert!(list.remove("www"));
        let cfg = reparsed(list);
        assert!(cfg.rules.is_empty());
        assert_eq!(cfg.timeouts.syn, 30, "the other sections are kept");
    }

    #[test]
    fn putting_a_rule_replaces_it_in_place_or_adds_it_last() {
        let mut list = RuleList::parse(TWO).unwrap();
        list.put("www", &fields("198.18.0.2:81", "198.18.0.4:80"));
        list.put(
            "tls",
            &RuleFields {
                ports: &[443, 8443],
                protocols: &["tcp", "udp"],
                share: Some(30),
                ..fields("198.18.0.2", "198.18.0.4")
            },
        );
        let shares: Vec<u8> = reparsed(list.clone())
            .rules
            .iter()
            .map(|r| r.share)
            .collect();
        assert_eq!(shares, [100, 100, 30]);
        let names: Vec<_> = reparsed(list.clone())
            .rules
            .into_iter()
            .map(|r| (r.name.clone(), r.to_text()))
            .collect();
        assert_eq!(
            names,
            [
                ("198.18.0.2:80".to_string(), "198.18.0.3:80".to_string()),
                ("www".to_string(), "198.18.0.4:80".to_string()),
                ("tls".to_string(), "198.18.0.4:443,8443/tcp+udp".to_string()),
            ]
        );
    }

    #[test]
    fn an_empty_file_has_no_rules_and_text_that_is_not_a_rule_list_is_refused() {
        let mut list = RuleList::parse("").unwrap();
        assert!(!list.remove("www"));
        list.put("www", &fields("198.18.0.2:80", "198.18.0.3:80"));
        assert_eq!(reparsed(list).rules.len(), 1);
        assert!(matches!(
            RuleList::parse("[[rule]\n"),
            Err(RuleListError::NotToml(_))
        ));
        assert_eq!(
            RuleList::parse("rule = 3\n").unwrap_err(),
            RuleListError::NotAList
        );
    }
}
