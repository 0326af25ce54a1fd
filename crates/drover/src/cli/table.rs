//! Terminal tables whose columns fit what they hold: a long model id or URL
//! widens its column rather than pushing the rest out of line.

/// How a column's cells sit in it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// The rows under `head`, each column as wide as its widest cell; the last
/// column is not padded.
pub fn render(head: &[&str], align: &[Align], rows: &[Vec<String>]) -> String {
    let columns = head.len();
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let head: Vec<String> = head.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&head).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(columns) {
            if i > 0 {
                line.push(' ');
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            let last = i + 1 == columns;
            match align.get(i).copied().unwrap_or(Align::Left) {
                Align::Right => {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                }
                Align::Left => {
                    line.push_str(cell);
                    if !last {
                        line.push_str(&" ".repeat(pad));
                    }
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Seconds as a person reads a span of time: 42s, 7m, 3h, 2d.
pub fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_cell_widens_its_column_and_the_rest_stay_in_line() {
        let rows = vec![
            vec!["m".to_string(), "a".to_string(), "1/2".to_string()],
            vec![
                "hf.co/bartowski/Qwen2.5-Coder-32B-Instruct-GGUF:Q4_K_M".to_string(),
                "studio-1".to_string(),
                "10/12".to_string(),
            ],
        ];
        let text = render(
            &["MODEL", "BACKEND", "SLOTS"],
            &[Align::Left, Align::Left, Align::Right],
            &rows,
        );
        let lines: Vec<&str> = text.lines().collect();
        let at = |line: &str, needle: &str| line.find(needle).unwrap();
        assert_eq!(at(lines[0], "BACKEND"), at(lines[1], "a"));
        assert_eq!(at(lines[1], "a"), at(lines[2], "studio-1"));
        // Right-aligned: the ends line up.
        assert_eq!(lines[0].len(), lines[2].len());
        assert!(lines[1].ends_with("1/2"));
    }
}
