//! What an operator watches: the status page (`GET /` on the control API,
//! one self-contained page, `page.html`, compiled in) and the migrations
//! it charts, as `cutover` reports them (`migrations`).

pub mod migrations;

/// The status page: HTML, CSS and script in one file, no outside asset.
pub const PAGE: &str = include_str!("page.html");
