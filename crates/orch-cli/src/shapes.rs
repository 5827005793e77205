//! Output helpers for the CLI: the JSON shapes are the API's own (one copy, in
//! `orch_server::shapes`), and text tables for people.

pub(crate) use orch_server::shapes::{event, item, item_usage, job};

/// Rows printed as columns padded to their widest cell (the last column is not
/// padded, so long titles do not drag trailing spaces).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| if i == last { c.clone() } else { format!("{c:<w$}", w = widths[i]) })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB", "C"], &[vec!["xxx".into(), "y".into(), "long last".into()]]);
        assert_eq!(t, "A    BB  C\nxxx  y   long last\n");
    }
}
