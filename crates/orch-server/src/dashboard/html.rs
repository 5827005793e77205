//! Safe HTML text for the dashboard: every value that comes from an item, an
//! agent, a log or a client passes through [`esc`] (or [`log_text`]) before it
//! reaches a page, and the page shell carries no inline script or style, so the
//! Content-Security-Policy can forbid both.

use std::fmt::Write as _;
use std::time::Duration;

use orch_core::Timestamp;

/// `s` with the five HTML-significant characters replaced by entities: safe in
/// element text and in double- or single-quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Agent output as plain text: ANSI escape sequences (colours, cursor moves,
/// OSC titles and links) and other control characters removed, tabs and line
/// breaks kept. Escape the result with [`esc`] before it goes into a page.
pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek() {
                // CSI: parameters and intermediates up to a final byte @..~.
                Some('[') => {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    chars.next();
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                // A two-character escape.
                Some(_) => {
                    chars.next();
                }
                None => {}
            },
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Agent output ready for a `<pre>`: control sequences stripped, then escaped.
pub(crate) fn log_text(s: &str) -> String {
    esc(&strip_ansi(s))
}

/// A short human duration: `350ms`, `45s`, `12m 5s`, `3h 20m`, `2d 4h`.
pub(crate) fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 && !d.is_zero() {
        return format!("{}ms", d.as_millis());
    }
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A `<time>` element: the RFC 3339 instant as its machine value and its text.
pub(crate) fn time(t: Timestamp) -> String {
    let s = t.to_rfc3339();
    format!("<time datetime=\"{s}\">{}</time>", esc(&s.replace('T', " ")))
}

/// Which page the navigation marks as current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Board,
    Health,
    Other,
}

/// A whole page: `title` is plain text (escaped here), `body` is HTML built by
/// the page modules from escaped parts. `live` is the `/events` query the page
/// follows (`""` for every event), or `None` for a page that does not refresh;
/// `now` is the server's time of rendering, from which the script keeps the
/// cards' "time in stage" ticking.
pub(crate) fn page(title: &str, nav: Nav, live: Option<&str>, now: Option<Timestamp>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    let current = |n: Nav| if n == nav { " aria-current=\"page\"" } else { "" };
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>{title} · orch</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/dash.css\">\
         <link rel=\"icon\" href=\"/ui/assets/favicon.svg\" type=\"image/svg+xml\">\
         <script src=\"/ui/assets/dash.js\" defer></script></head>\
         <body><a class=\"skip\" href=\"#live\">Skip to content</a>\
         <header class=\"top\"><nav aria-label=\"Main\"><a class=\"brand\" href=\"/\">orch</a>\
         <a href=\"/\"{b}>Board</a><a href=\"/ui/health\"{h}>Health</a></nav>\
         <span id=\"conn\" class=\"conn\" role=\"status\" aria-live=\"polite\"></span></header>\
         <main id=\"live\" tabindex=\"-1\"{live}{now}>{body}</main></body></html>",
        title = esc(title),
        b = current(Nav::Board),
        h = current(Nav::Health),
        live = live.map(|q| format!(" data-live=\"{}\"", esc(q))).unwrap_or_default(),
        now = now.map(|t| format!(" data-now=\"{}\"", t.as_millis())).unwrap_or_default(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_neutralises_markup_in_text_and_attributes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn strip_ansi_removes_colours_osc_links_and_controls() {
        let raw = "\u{1b}[1;31mred\u{1b}[0m \u{1b}]8;;http://evil\u{7}link\u{1b}]8;;\u{1b}\\ bell\u{7}\ttab\nnext\r";
        assert_eq!(strip_ansi(raw), "red link bell\ttab\nnext");
        assert_eq!(log_text("\u{1b}[32m<b>ok</b>"), "&lt;b&gt;ok&lt;/b&gt;");
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_millis(350)), "350ms");
        assert_eq!(duration(Duration::from_secs(45)), "45s");
        assert_eq!(duration(Duration::from_secs(725)), "12m 5s");
        assert_eq!(duration(Duration::from_secs(12_000)), "3h 20m");
        assert_eq!(duration(Duration::from_secs(187_200)), "2d 4h");
    }
}
