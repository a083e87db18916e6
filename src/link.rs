//! Which URLs from a peer may become links on a page or in a message.
//!
//! An Alertmanager payload carries URLs (`generatorURL`, `externalURL`) that rollbackd shows to
//! on-call, on the incident page, in email and in Slack. [`safe_link`] is the one rule for all
//! of them: only an absolute `http:` or `https:` URL with a host becomes a link. Anything else
//! (`javascript:`, `data:`, `vbscript:`, a relative or malformed URL) is shown, if at all, as
//! escaped text.

/// The URL itself when it may be an `href` or a Slack link, `None` otherwise.
///
/// Stricter than a browser, so that every renderer (HTML, Slack, a mail client) reads the same
/// URL as the one checked: the text must begin with `http://` or `https://` (any case) and a
/// host, contain no whitespace, control character or backslash (browsers drop or rewrite
/// those), parse as a URL with a host, and carry no user name or password (`https://good@evil`
/// misleads the reader).
pub fn safe_link(s: &str) -> Option<&str> {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    let authority = if lower.starts_with("http://") {
        &s[7..]
    } else if lower.starts_with("https://") {
        &s[8..]
    } else {
        return None;
    };
    // `http:///host` is read as `http://host/` by some parsers and as no host by others.
    if authority.starts_with('/') {
        return None;
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return None;
    }
    let url = url::Url::parse(s).ok()?;
    let http = matches!(url.scheme(), "http" | "https");
    let host = url.host_str().is_some_and(|h| !h.is_empty());
    let credentials = !url.username().is_empty() || url.password().is_some();
    (http && host && !credentials).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::safe_link;

    #[test]
    fn http_and_https_urls_are_links() {
        for ok in [
            "http://prometheus:9090/graph?g0.expr=rate%28x%5B5m%5D%29&g0.tab=1",
            "https://alertmanager.example/#/alerts?receiver=rollbackd",
            "HTTPS://Example.COM/Path",
            "http://[::1]:9090/",
            "https://rb.example/incidents/7",
        ] {
            assert_eq!(safe_link(ok), Some(ok), "{ok:?}");
        }
    }

    #[test]
    fn every_other_url_is_text() {
        for hostile in [
            "",
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            " javascript:alert(1)",
            "\u{0}javascript:alert(1)",
            "\u{1b}javascript:alert(1)",
            "java\tscript:alert(1)",
            "java\nscript:alert(1)",
            "javascript://example.com/%0aalert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:msgbox(1)",
            "file:///etc/passwd",
            "ftp://example.com/",
            "//evil.example/x",
            "/incidents/1",
            "incidents/1",
            "http:evil.example",
            "http:/evil.example",
            "http:\\\\evil.example",
            "http://\\evil.example",
            "http://",
            "https://",
            "http:///path",
            " http://ok.example/",
            "\thttp://ok.example/",
            "http://ok.example/\n",
            "http://ok.example/a b",
            "http://ok\u{0}.example/",
            "https://user:pw@evil.example/",
            "https://good.example@evil.example/",
            "http://exa mple.com",
            "http://[::1/",
            "httpx://example.com",
            "\u{feff}http://ok.example/",
        ] {
            assert_eq!(safe_link(hostile), None, "{hostile:?}");
        }
    }
}
