//! Shortening agent-supplied text for one-line progress entries: bounded length,
//! first line only, control characters replaced, so a hostile stream cannot
//! flood or garble the job log.

/// At most `max` characters of the first line of `s`, control characters shown
/// as `?`, with `…` when cut.
pub(crate) fn one_line(s: &str, max: usize) -> String {
    let first = s.trim().lines().next().unwrap_or("");
    let mut out: String = first.chars().take(max).map(|c| if c.is_control() { '?' } else { c }).collect();
    if first.chars().count() > max || s.trim().lines().nth(1).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn keeps_the_first_line_bounded_and_printable() {
        assert_eq!(one_line("  hello\nworld", 80), "hello…");
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(one_line("a\u{1b}[31mb", 80), "a?[31mb");
        assert_eq!(one_line("", 10), "");
    }
}
