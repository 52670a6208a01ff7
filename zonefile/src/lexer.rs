//! Splitting master-file text into entries of tokens (RFC 1035 §5.1): the one
//! place that knows comments, quotes, escapes, parentheses and where each
//! entry starts, so that every error can name its line.

/// One word or quoted string of an entry, as written (escapes undecoded,
/// quotes removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'t> {
    pub text: &'t [u8],
    pub quoted: bool,
    /// The line the token starts on (1-based).
    pub line: usize,
}

impl Token<'_> {
    /// The token as written, for messages.
    pub fn show(&self) -> String {
        let text = String::from_utf8_lossy(self.text);
        if self.quoted {
            format!("\"{text}\"")
        } else {
            text.into_owned()
        }
    }

    /// Whether the token is the unquoted word `word`, compared without case.
    pub fn is(&self, word: &str) -> bool {
        !self.quoted && self.text.eq_ignore_ascii_case(word.as_bytes())
    }
}

/// One logical entry: a line, or several joined by parentheses.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a, 't> {
    /// The line the entry starts on.
    pub line: usize,
    /// The entry starts with a blank: its owner is the previous entry's.
    pub blank_owner: bool,
    pub tokens: &'a [Token<'t>],
}

/// Every entry of a text: their tokens in one vector (a zone file of a
/// million entries is a million allocations fewer), each entry a span of
/// it.
#[derive(Debug, Default)]
pub struct Entries<'t> {
    tokens: Vec<Token<'t>>,
    spans: Vec<Span>,
}

/// Where an entry is, and its tokens in [`Entries::tokens`].
#[derive(Debug, Clone, Copy)]
struct Span {
    line: usize,
    blank_owner: bool,
    start: usize,
    end: usize,
}

impl<'t> Entries<'t> {
    pub fn iter(&self) -> impl Iterator<Item = Entry<'_, 't>> {
        self.spans.iter().map(|s| Entry {
            line: s.line,
            blank_owner: s.blank_owner,
            tokens: &self.tokens[s.start..s.end],
        })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }
}

/// A lexical error: an unterminated quote or parenthesis, or a stray `)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub line: usize,
    pub message: String,
}

/// Splits `text` into its entries; empty lines and comment-only lines yield
/// none. Stops at the first lexical error, since what follows an open quote
/// or parenthesis cannot be read reliably.
pub fn entries(text: &[u8]) -> Result<Entries<'_>, LexError> {
    // Room for an entry per line and a few tokens each, up front.
    let lines = text.iter().filter(|&&b| b == b'\n').count() + 1;
    let mut out = Entries {
        tokens: Vec::with_capacity(lines * 4),
        spans: Vec::with_capacity(lines),
    };
    let mut current = Span {
        line: 1,
        blank_owner: false,
        start: 0,
        end: 0,
    };
    let (mut i, mut line) = (0usize, 1usize);
    // Where the open parenthesis was, for an error if it is never closed.
    let mut open: Option<usize> = None;
    let mut at_line_start = true;
    while i < text.len() {
        let c = text[i];
        if at_line_start && open.is_none() {
            at_line_start = false;
            current = Span {
                line,
                blank_owner: c == b' ' || c == b'\t',
                start: out.tokens.len(),
                end: 0,
            };
        }
        match c {
            b'\n' => {
                line += 1;
                i += 1;
                if open.is_none() {
                    finish(&mut out, &mut current);
                    at_line_start = true;
                }
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b';' => {
                while i < text.len() && text[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => {
                if open.is_some() {
                    return Err(LexError {
                        line,
                        message: "nested parentheses".into(),
                    });
                }
                open = Some(line);
                i += 1;
            }
            b')' => {
                if open.take().is_none() {
                    return Err(LexError {
                        line,
                        message: "`)` without a matching `(`".into(),
                    });
                }
                i += 1;
            }
            b'"' => {
                let start_line = line;
                let start = i + 1;
                i = start;
                loop {
                    match text.get(i) {
                        None => {
                            return Err(LexError {
                                line: start_line,
                                message: "a quoted string is not closed".into(),
                            });
                        }
                        Some(b'"') => break,
                        Some(b'\\') => {
                            if text.get(i + 1) == Some(&b'\n') {
                                line += 1;
                            }
                            i += 2;
                        }
                        Some(b'\n') => {
                            line += 1;
                            i += 1;
                        }
                        Some(_) => i += 1,
                    }
                }
                out.tokens.push(Token {
                    text: &text[start..i.min(text.len())],
                    quoted: true,
                    line: start_line,
                });
                i += 1;
            }
            _ => {
                let start = i;
                while i < text.len() {
                    match text[i] {
                        b'\\' => {
                            // An escaped newline would join lines inside a
                            // word: no zone file means that.
                            if text.get(i + 1).is_some_and(|&n| n != b'\n') {
                                i += 2;
                            } else {
                                i += 1;
                            }
                        }
                        b' ' | b'\t' | b'\r' | b'\n' | b';' | b'(' | b')' | b'"' => break,
                        _ => i += 1,
                    }
                }
                out.tokens.push(Token {
                    text: &text[start..i.min(text.len())],
                    quoted: false,
                    line,
                });
            }
        }
    }
    if let Some(line) = open {
        return Err(LexError {
            line,
            message: "`(` is never closed".into(),
        });
    }
    finish(&mut out, &mut current);
    Ok(out)
}

/// Ends the entry `current`, unless it has no tokens.
fn finish(out: &mut Entries<'_>, current: &mut Span) {
    if out.tokens.len() > current.start {
        current.end = out.tokens.len();
        out.spans.push(*current);
        // Ended once: the next entry starts after it.
        current.start = current.end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<(usize, bool, Vec<String>)> {
        entries(text.as_bytes())
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e.line,
                    e.blank_owner,
                    e.tokens.iter().map(|t| t.show()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn parentheses_join_lines_and_comments_end_at_the_newline() {
        let got = words("@ SOA ns ( ; serial next\n 1 2 ) ; done\n\n  A 198.18.0.1\n");
        assert_eq!(
            got,
            [
                (
                    1,
                    false,
                    vec![
                        "@".into(),
                        "SOA".into(),
                        "ns".into(),
                        "1".into(),
                        "2".into()
                    ]
                ),
                (4, true, vec!["A".into(), "198.18.0.1".into()]),
            ]
        );
    }

    #[test]
    fn quotes_and_escapes_keep_their_specials() {
        let got = words("t TXT \"a ; (b\" c\\ d \"e\\\"f\" g\\;h\n");
        assert_eq!(
            got[0].2,
            ["t", "TXT", "\"a ; (b\"", "c\\ d", "\"e\\\"f\"", "g\\;h"]
        );
    }

    #[test]
    fn unbalanced_input_names_its_line() {
        assert_eq!(entries(b"a A 1\nb TXT \"open\n").unwrap_err().line, 2);
        assert_eq!(entries(b"a A 1\n\nb SOA (\n1\n").unwrap_err().line, 3);
        assert_eq!(entries(b"a A 1 )\n").unwrap_err().line, 1);
    }
}
